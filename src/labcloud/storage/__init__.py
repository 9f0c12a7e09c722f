"""Where users' files live. Local disk for now; S3-compatible stores plug in behind the same names."""
