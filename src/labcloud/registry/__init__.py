"""The app registry: app YAML files → validated specs, and the rules a job of an app must follow.

Pure Python: no HTTP, no database.
"""

from labcloud.registry.entrypoint import EntrypointSpec, stored_entrypoint
from labcloud.registry.jobs import (
    job_environment,
    render_command,
    render_text,
    validate_inputs,
    validate_params,
)
from labcloud.registry.loader import LoadProblem, LoadResult, format_loc, load_app_file, parse_app
from labcloud.registry.models import AppSpec, VersionSpec, version_key
from labcloud.registry.public import app_to_public, bundled_apps_dir, entrypoint_to_public
from labcloud.registry.registry import AppRegistry, RegistrySnapshot, ResolvedEntrypoint
from labcloud.registry.spec_parts import InputSpec, Resources, SpecError
from labcloud.registry.template import Placeholder, TemplateError, parse_template, render_value

__all__ = [
    "AppRegistry",
    "AppSpec",
    "EntrypointSpec",
    "InputSpec",
    "LoadProblem",
    "LoadResult",
    "Placeholder",
    "RegistrySnapshot",
    "ResolvedEntrypoint",
    "Resources",
    "SpecError",
    "TemplateError",
    "VersionSpec",
    "app_to_public",
    "bundled_apps_dir",
    "entrypoint_to_public",
    "format_loc",
    "job_environment",
    "load_app_file",
    "parse_app",
    "parse_template",
    "render_command",
    "render_text",
    "render_value",
    "stored_entrypoint",
    "validate_inputs",
    "validate_params",
    "version_key",
]
