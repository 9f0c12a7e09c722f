"""What a job submission is checked against beside its app's schema: the resources asked for (within the
limits labcloud knows and an executor offers, said in their units), its tags, and the tag filters of a
listing; :class:`Problems` gathers every problem of a submission to tell them at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from labcloud import registry
from labcloud.errors import InvalidInput
from labcloud.registry.spec_parts import Resources

T = TypeVar("T")

MAX_TAG_FILTERS = 20  # a job has at most 20 tags


def tag_filters(items: Sequence[str], loc: list[str | int]) -> dict[str, str]:
    """``key=value`` filters, at most as many as a job can have tags, each as long as a tag can be;
    InvalidInput naming each bad one (at ``loc`` + its index)."""
    if len(items) > MAX_TAG_FILTERS:
        raise InvalidInput.field(loc, f"at most {MAX_TAG_FILTERS} tag filters")
    tags: dict[str, str] = {}
    errors = []
    for i, item in enumerate(items):
        key, sep, value = item.partition("=")
        if not sep or not key:
            errors.append({"loc": [*loc, i], "msg": f"write tags as key=value (not {item[:40]!r})"})
        elif len(key) > 64 or len(value) > 200:
            errors.append({"loc": [*loc, i], "msg": "tag names have 1-64 characters, values at most 200"})
        else:
            tags[key] = value
    if errors:
        raise InvalidInput("Some tag filters are not valid.", errors=errors)
    return tags


class Problems:
    """Collects InvalidInput errors from several checks, to raise them together."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.first: InvalidInput | None = None

    def check(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except InvalidInput as exc:
            self.first = self.first or exc
            self.errors += exc.errors or [{"loc": ["body"], "msg": exc.detail}]
            return None

    def add(self, errors: Sequence[dict[str, Any]]) -> None:
        if errors:
            self.first = self.first or InvalidInput("Some fields are not valid.", errors=[])
            self.errors += errors

    def raise_any(self) -> None:
        if self.first is not None:
            detail = (
                self.first.detail
                if len(self.errors) == 1
                else f"{len(self.errors)} problems in the submission"
            )
            raise type(self.first)(detail, errors=self.errors)


RESOURCE_LIMITS = {
    "cpus": (0.01, 1024.0),
    "memory_mb": (1, 16 * 1024 * 1024),
    "gpus": (0, 64),
    "timeout_s": (1, 30 * 86400),
}
RESOURCE_UNITS = {"cpus": "CPUs", "memory_mb": "MB", "gpus": "GPUs", "timeout_s": "seconds"}


def amount(value: float, key: str = "") -> str:
    """A resource amount as people write it: 19284 MB, 0.5 CPUs (never 1.67772e+07)."""
    number = float(value)
    text = str(int(number)) if number.is_integer() else f"{number:.6g}"
    unit = RESOURCE_UNITS.get(key, "")
    if number == 1 and unit.endswith("s"):
        unit = unit[:-1]  # 1 CPU, 1 second
    return f"{text} {unit}".strip()


def resources_asked(spec: registry.EntrypointSpec, overrides: dict[str, Any]) -> tuple[Resources, list[Any]]:
    """The resources asked for, a bad value replaced by the app's default; and the errors of the bad ones
    (checked against the executor's limits all the same: a form hears of every problem at once)."""
    resources = spec.resources.model_dump()
    errors: list[dict[str, Any]] = []
    for key, value in overrides.items():
        if key not in RESOURCE_LIMITS:
            errors.append(
                {
                    "loc": ["body", "resources", key],
                    "msg": f"unknown resource; known: {', '.join(RESOURCE_LIMITS)}",
                }
            )
            continue
        low, high = RESOURCE_LIMITS[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high or (key != "cpus" and not float(value).is_integer()):
            whole = "" if key == "cpus" else "whole "
            errors.append(
                {
                    "loc": ["body", "resources", key],
                    "msg": f"must be a {whole}number from {amount(low, key)} to {amount(high, key)}",
                }
            )
            continue
        resources[key] = int(value) if key != "cpus" else float(value)
    return Resources.model_validate(resources), errors


def within(resources: Resources, ceiling: dict[str, float]) -> None:
    needs = resources.needs()
    errors = [
        {
            "loc": ["body", "resources", key],
            "msg": f"at most {amount(limit, key)} here (asked for {amount(needs[key], key)})",
        }
        for key, limit in ceiling.items()
        if needs.get(key, 0.0) > limit
    ]
    if errors:
        raise InvalidInput("Some resources are not valid.", errors=errors)


def check_tags(tags: dict[str, str]) -> None:
    errors = []
    if len(tags) > 20:
        errors.append({"loc": ["body", "tags"], "msg": "at most 20 tags"})
    for key, value in tags.items():
        if not key or len(key) > 64 or not isinstance(value, str) or len(value) > 200:
            errors.append(
                {"loc": ["body", "tags", key], "msg": "tag names have 1-64 characters, values at most 200"}
            )
    if errors:
        raise InvalidInput("Some tags are not valid.", errors=errors)
