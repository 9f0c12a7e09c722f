"""What the two HTTP faces share, below both: the JSON API (:mod:`labcloud.api`) and the pages
(:mod:`labcloud.web`) import it; it imports neither.

- :mod:`.guard`: authenticate before reading a body, bound bodies, refuse strings and addresses that are
  not text;
- :mod:`.problems`: RFC 9457 problem details, and which database errors mean "busy, try again";
- :mod:`.downloads`: a file (Range, ETag, or a presigned redirect) or a folder as a zip
  (:mod:`.zipstream`, built while it is sent);
- :mod:`.job_log`: a job's log as text or as server-sent events.
"""
