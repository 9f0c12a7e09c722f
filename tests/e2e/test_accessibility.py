"""Every page of the web UI, at a desktop viewport (light theme) and a phone viewport (dark theme), checked in
a real Chromium: axe-core finds no serious or critical violation, nothing makes the page scroll sideways at
phone width (wide tables scroll inside their own ``.table-scroll``), and no word in a table cell is broken
in the middle (only long tokens may be). A screenshot of each, and everything axe found (the moderate and
minor too), are saved to test-artifacts/e2e/.

axe-core is vendored in tests/e2e/vendor/axe-core (see its README). The pages' Content-Security-Policy
(``script-src 'self'``) blocks an injected ``<script>`` tag (``page.add_script_tag``), so its source is run
with ``page.evaluate`` (DevTools evaluation, which the policy does not govern); the pages are audited
under their real policy, without ``bypass_csp``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from inspect import getsource
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from playwright.sync_api import Browser, BrowserContext, Page, expect

import labcloud_demo
from labcloud.web.routes import (
    account,
    admin,
    admin_jobs,
    apps,
    auth,
    device_sessions,
    devices,
    files,
    home,
    jobs,
    project_budget,
    projects,
    search,
    webhooks,
)
from live_server import eventually

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, SCREENSHOTS, LiveServer, screenshot

pytestmark = pytest.mark.e2e
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
SAMPLE_TRACE = Path(labcloud_demo.__file__).parent / "samples" / "trace.csv"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
FAILING_IMPACTS = {"serious", "critical"}
STREAMING = {"job-running"}
JOB_TIMEOUT_S = 90
# Long tokens on purpose: an email and names that must wrap (or scroll) rather than widen a phone's page.
USER_EMAIL = "marie-sklodowska.researcher@neuroscience-department.example.org"
USER_PASSWORD = "a11y-user-password"
USER_NAME = "Marie Skłodowska-Curie (Institute of Experimental Neuroscience)"
SLEEP = "import time; print('still', 'working', flush=True); time.sleep(600)"
PROJECT = "Visual cortex recordings 2025"


@dataclass
class World:
    """What the pages show: ids of what the fixture made."""

    succeeded: str
    failed: str
    running: str
    waiting: str
    project: str
    webhook: str
    user_id: str
    session: str


def _wait_state(api: Any, job_id: str, states: set[str]) -> str:
    def reached() -> str | None:
        state: str = api.get(f"/api/v1/jobs/{job_id}").json()["state"]
        return state if state in states else None

    return eventually(reached, JOB_TIMEOUT_S, f"job {job_id} to reach {sorted(states)}", interval=0.2)


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> Iterator[World]:
    """Just enough of everything for every page to have content: files in a folder, jobs that succeeded,
    failed, run and wait, a project with a member, a quota and a request for more, a worker, a webhook
    with a delivery."""
    sleeper = {
        "name": "sleeper",
        "title": "Sleeper",
        "description": "Waits (a job that is still running while its pages are looked at).",
        "versions": {
            "1.0": {
                "entrypoints": {
                    "main": {
                        "description": "Print a line, then wait",
                        "runtime": "process",
                        "command": [
                            "python",
                            "-c",
                            "import time; print('still', 'working', flush=True); time.sleep(600)",
                        ],
                        "parameters": {"type": "object", "properties": {}},
                        "resources": {"cpus": 1, "memory_mb": 128, "timeout_s": 900},
                    },
                    "broken": {
                        "description": "Exit with an error",
                        "runtime": "process",
                        "command": ["python", "-c", "import sys; sys.exit('the input is not a trace')"],
                        "parameters": {"type": "object", "properties": {}},
                        "resources": {"cpus": 1, "memory_mb": 128, "timeout_s": 60},
                    },
                }
            }
        },
    }
    (live_server.apps_dir / "sleeper.yaml").write_text(json.dumps(sleeper))  # JSON is YAML
    (live_server.apps_dir / "half-written.yaml").write_text("name: half-written\nversions: [\n")
    with live_server.api(live_server.admin_token()) as api:
        r = api.post(
            "/api/v1/users",
            json={
                "email": USER_EMAIL,
                "password": USER_PASSWORD,
                "name": USER_NAME,
                "must_change_password": False,
            },
        )
        assert r.status_code == 201, r.text
        user_id = r.json()["id"]
        for path in ("trace.csv", "recordings/2025-03-14/session-01-visual-cortex-trace.csv"):
            r = api.put(f"/api/v1/files/{path}", content=SAMPLE_TRACE.read_bytes())
            assert r.status_code == 201, r.text
        r = api.post("/api/v1/projects", json={"name": PROJECT, "description": "Two-photon imaging."})
        assert r.status_code == 201, r.text
        slug = r.json()["slug"]
        r = api.post(f"/api/v1/projects/{slug}/members", json={"email": USER_EMAIL, "role": "member"})
        assert r.status_code == 200, r.text
        r = api.put(f"/api/v1/projects/{slug}/quotas/cpu_hours", json={"limit": 10, "period": "monthly"})
        assert r.status_code == 200, r.text
        r = api.post(
            "/api/v1/workers",
            json={
                "name": "rig-1",
                "labels": {"platform": "spinnaker"},
                "location": "Room B12, behaviour suite (bench 3)",
                "description": "Home-cage enclosure: two infrared cameras, a lick sensor, a reward pump.",
            },
        )
        assert r.status_code == 201, r.text
        _devices(api, r.json()["token"])
        r = api.post(
            "/api/v1/sessions",
            json={
                "app": "hello",
                "name": "enclosures, morning",
                "params": {"times": 1},
                "devices": [{"worker": "rig-1", "params": {"name": "Ada"}}],
            },
        )
        assert r.status_code == 201, r.text
        session = r.json()["id"]
        r = api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["job.succeeded"]})
        assert r.status_code == 201, r.text
        webhook = r.json()["id"]
        r = api.post("/api/v1/me/tokens", json={"name": "analysis workstation in room B12"})
        assert r.status_code == 201, r.text
        assert api.post(f"/api/v1/webhooks/{webhook}/test").status_code == 202

        def submit(**body: Any) -> str:
            r = api.post("/api/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            job_id: str = r.json()["id"]
            return job_id

        succeeded = submit(
            app="spikes", inputs={"trace": "trace.csv"}, name="spikes of session 01", project=slug
        )
        failed = submit(app="sleeper", entrypoint="broken", name="a job that fails")
        assert _wait_state(api, succeeded, {"succeeded", "failed", "cancelled"}) == "succeeded"
        assert _wait_state(api, failed, {"succeeded", "failed", "cancelled"}) == "failed"
        running = submit(app="sleeper", entrypoint="main", name="a long recording sweep")
        _wait_state(api, running, {"running"})
        # the server offers 2 CPUs and one is taken: this one waits
        waiting = submit(app="sleeper", entrypoint="main", name="a job that waits", resources={"cpus": 2})

    with live_server.api(_token(live_server, USER_EMAIL, USER_PASSWORD)) as api:
        r = api.post("/api/v1/me/tokens", json={"name": "laptop", "scopes": ["read"]})
        assert r.status_code == 201, r.text
        r = api.post(
            f"/api/v1/projects/{slug}/quota-requests",
            json={"resource": "cpu_hours", "amount": 20, "justification": "The March recordings need more."},
        )
        assert r.status_code == 201, r.text
    yield World(succeeded, failed, running, waiting, slug, webhook, user_id, session)
    with live_server.api(live_server.admin_token()) as api:
        for job_id in (running, waiting):
            api.post(f"/api/v1/jobs/{job_id}/cancel")
        api.post(f"/api/v1/sessions/{session}/cancel")


DEVICE_SCHEMAS = {
    "platform=spinnaker": {
        "type": "object",
        "required": ["board"],
        "properties": {"board": {"enum": ["ready", "running"]}, "temperature_c": {"type": "number"}},
    },
    "kind=camera": {"type": "object", "required": ["camera"], "properties": {"camera": {"enum": ["ready"]}}},
}


def _devices(api: Any, rig_token: str) -> None:
    """rig-1 with a valid status and a history of a few samples (the server samples every second here);
    cam-2 with a status its label's schema finds wrong."""
    for label, schema in DEVICE_SCHEMAS.items():
        r = api.put(f"/api/v1/device-schemas/{label}", json={"schema": schema})
        assert r.status_code == 201, r.text
    beats = iter(range(1000))

    def beat(token: str, status: dict[str, Any]) -> dict[str, Any]:
        telemetry = {
            "load1": 0.4,
            "disk_free_bytes": 52 * 2**30,
            "memory_available_mb": 6100,
            "status": status,
        }
        r = api.post("/api/v1/worker/heartbeat", json={"telemetry": telemetry}, headers=_bearer(token))
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def sampled() -> bool:
        n = next(beats)
        beat(rig_token, {"board": "ready", "temperature_c": 24 + n % 5 * 0.5, "cameras": {"left_fps": 30}})
        return len(api.get("/api/v1/devices/rig-1").json()["history"]["times"]) >= 4

    eventually(sampled, 30, "rig-1's history to have samples", interval=0.3)
    r = api.post(
        "/api/v1/workers",
        json={"name": "cam-2", "labels": {"kind": "camera"}, "location": "Room C4"},
    )
    assert r.status_code == 201, r.text
    assert beat(r.json()["token"], {"camera": "unplugged", "temperature_c": 41.5})["status_problems"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _token(live_server: LiveServer, email: str, password: str) -> str:
    with live_server.api() as c:
        r = c.post("/api/v1/auth/login", data={"username": email, "password": password})
        r.raise_for_status()
        token: str = r.json()["access_token"]
        return token


# who, viewport -> a logged-in (or, for "anyone", a logged-out) browser context
Contexts = Callable[[str, str], BrowserContext]


@pytest.fixture(scope="module")
def contexts(browser: Browser, live_server: LiveServer, world: World) -> Iterator[Contexts]:
    made: dict[tuple[str, str], BrowserContext] = {}
    logins = {"admin": (ADMIN_EMAIL, ADMIN_PASSWORD), "user": (USER_EMAIL, USER_PASSWORD)}

    def get(who: str, viewport: str) -> BrowserContext:
        if (who, viewport) not in made:
            ctx = browser.new_context(
                base_url=live_server.url,
                viewport=VIEWPORTS[viewport],  # type: ignore[arg-type]
                is_mobile=viewport == "phone",
                has_touch=viewport == "phone",
                # the phone pass is in the dark theme: axe checks the contrast of both themes
                color_scheme="dark" if viewport == "phone" else "light",
            )
            ctx.set_default_timeout(30_000)
            if who in logins:
                tab = ctx.new_page()
                tab.goto("/login")
                tab.get_by_label("Email").fill(logins[who][0])
                tab.get_by_label("Password").fill(logins[who][1])
                tab.get_by_role("button", name="Log in").click()
                expect(tab.get_by_role("heading", name="Dashboard")).to_be_visible()
                tab.close()
            made[(who, viewport)] = ctx
        return made[(who, viewport)]

    yield get
    for ctx in made.values():
        ctx.close()


# How to get to each page: a path (with {ids} from World), or a function that drives the page there.
def _invalid_run(app: str, label: str, value: str) -> Callable[[Page, World], None]:
    def drive(page: Page, world: World) -> None:
        page.goto(f"/apps/{app}")
        page.get_by_label(re.compile(rf"^{label}\b")).fill(value)
        page.get_by_role("button", name="Start job").click()
        expect(page.locator("#form-errors")).to_be_visible()
        expect(page.locator(".help p.error").first).to_be_visible()

    return drive


def _login_error(page: Page, world: World) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill("nobody@example.org")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_be_visible()


def _invalid_project(page: Page, world: World) -> None:
    page.goto("/projects")
    page.get_by_label("Name").fill("Bad slug")
    page.get_by_label("Slug (optional)").fill("Bad slug!")
    page.get_by_role("button", name="Create project").click()
    expect(page.locator('[data-error-for="slug"]')).to_be_visible()


def _width(page: Page) -> int:
    """Names made on a page differ per viewport (each makes its own)."""
    size = page.viewport_size
    assert size
    return size["width"]


def _register_worker(page: Page, world: World) -> None:
    page.goto("/admin/workers")
    page.get_by_label("Name", exact=True).fill(f"rig-{_width(page)}")
    page.get_by_role("button", name="Register worker").click()
    expect(page.locator("#worker-token")).to_have_value(re.compile(r"^lcw_"))


def _invite_user(page: Page, world: World) -> None:
    page.goto("/admin/users")
    page.get_by_label("Email").fill(f"invited-{_width(page)}@example.org")
    page.get_by_role("button", name="Invite", exact=True).click()
    expect(page.locator("#invited-password")).not_to_have_value("")


def _create_token(page: Page, world: World) -> None:
    page.goto("/account")
    page.get_by_label("Name").fill(f"laptop-{_width(page)}")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#token-secret")).to_have_value(re.compile(r"^lc_"))


def _add_webhook(page: Page, world: World) -> None:
    page.goto("/account/webhooks")
    page.get_by_label("URL").fill(f"http://127.0.0.1:9/hook-{_width(page)}")
    page.get_by_label("job.failed").check()
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#webhook-secret")).not_to_have_value("")


def _running_job(page: Page, world: World) -> None:
    page.goto(f"/jobs/{world.running}")
    expect(page.locator("#job-status")).to_have_attribute("data-state", "running")
    expect(page.locator("#log")).to_contain_text("still working")


def _admin_apps(page: Page, world: World) -> None:
    page.goto("/admin/apps")
    expect(page.locator("tr.problem")).to_contain_text("half-written.yaml")


def _invalid_device_schema(page: Page, world: World) -> None:
    page.goto("/admin/device-schemas")
    page.get_by_label("Label", exact=True).fill("kind=microscope")
    page.get_by_label("JSON Schema", exact=True).fill("{not json")
    page.get_by_role("button", name="Set schema").click()
    expect(page.locator("#schema-text-help .error")).to_be_visible()


def _invalid_worker(page: Page, world: World) -> None:
    page.goto("/admin/workers")
    page.get_by_label("Name", exact=True).fill("rig-1")  # taken
    page.get_by_role("button", name="Register worker").click()
    expect(page.locator("#worker-name-help .error")).to_be_visible()


def _devices_form(page: Page, world: World) -> None:
    """The run form's devices, opened, with a device's answers that could not be read."""
    page.goto("/apps/hello")
    page.locator("#run-on-devices summary").click()
    page.get_by_label("rig-1", exact=True).check()
    page.get_by_label("rig-1's own answers").fill("no pairs here")
    page.get_by_role("button", name="Start a session on the ticked devices").click()
    expect(page.locator("#run-on-devices .error")).to_be_visible()


Visit = str | Callable[[Page, World], None]
PAGES: list[tuple[str, str, Visit]] = [
    ("dashboard", "admin", "/"),
    ("apps", "admin", "/apps"),
    ("app-hello", "admin", "/apps/hello"),
    ("app-spikes", "admin", "/apps/spikes"),
    ("app-lif", "admin", "/apps/lif"),
    ("app-wordcount", "admin", "/apps/wordcount"),
    ("app-sleeper", "admin", "/apps/sleeper"),
    ("app-hello-invalid", "admin", _invalid_run("hello", "Times", "0")),
    ("app-spikes-invalid", "admin", _invalid_run("spikes", "Threshold", "0.5")),
    ("app-lif-invalid", "admin", _invalid_run("lif", "Neurons", "-5")),
    ("app-wordcount-invalid", "admin", _invalid_run("wordcount", "Top", "0")),
    ("app-rerun", "admin", "/apps/spikes?from_job={succeeded}"),
    ("files", "admin", "/files"),
    ("files-folder", "admin", "/files?path=recordings/2025-03-14"),
    ("jobs", "admin", "/jobs"),
    ("job-succeeded", "admin", "/jobs/{succeeded}"),
    ("job-failed", "admin", "/jobs/{failed}"),
    ("job-running", "admin", _running_job),
    ("job-waiting", "admin", "/jobs/{waiting}"),
    ("projects", "admin", "/projects"),
    ("projects-invalid", "admin", _invalid_project),
    ("project", "admin", "/projects/{project}"),
    ("project-usage", "admin", "/projects/{project}?by=app&months=3#usage"),
    ("project-webhooks", "admin", "/projects/{project}/webhooks"),
    ("account", "admin", "/account"),
    ("webhooks", "admin", "/account/webhooks"),
    ("webhook", "admin", "/account/webhooks/{webhook}"),
    ("admin-users", "admin", "/admin/users"),
    ("admin-user", "admin", "/admin/users/{user_id}"),
    ("sessions", "admin", "/sessions"),
    ("session", "admin", "/sessions/{session}"),
    ("app-hello-devices", "admin", _devices_form),
    ("search", "admin", "/search?q=trace"),
    ("search-nothing", "admin", "/search?q=no-such-thing"),
    ("admin-jobs", "admin", "/admin/jobs"),
    ("admin-jobs-ended", "admin", "/admin/jobs?view=ended"),
    ("admin-workers", "admin", "/admin/workers"),
    ("admin-workers-invalid", "admin", _invalid_worker),
    ("admin-workers-registered", "admin", _register_worker),
    ("admin-users-invited", "admin", _invite_user),
    ("account-token-created", "admin", _create_token),
    ("webhooks-added", "admin", _add_webhook),
    ("admin-apps", "admin", _admin_apps),  # with a file that failed to load
    ("admin-device-schemas", "admin", "/admin/device-schemas"),
    ("admin-device-schemas-invalid", "admin", _invalid_device_schema),
    ("device-admin", "admin", "/devices/rig-1"),  # with the form that changes it
    ("not-found", "admin", "/no-such-page"),
    ("job-not-found", "admin", "/jobs/00000000-0000-4000-8000-000000000000"),
    ("user-dashboard", "user", "/"),
    ("user-files", "user", "/files"),
    ("user-jobs", "user", "/jobs"),
    ("user-project", "user", "/projects/{project}"),
    ("user-account", "user", "/account"),
    ("user-devices", "user", "/devices"),
    ("user-device", "user", "/devices/rig-1"),  # its status and charts
    ("user-device-problems", "user", "/devices/cam-2"),  # a status its schema finds wrong
    ("user-forbidden", "user", "/admin/users"),
    ("login", "anyone", "/login"),
    ("login-error", "anyone", _login_error),
    ("forgot-password", "anyone", "/login/forgot"),
    ("set-password-bad-link", "anyone", "/login/set-password?token=not-a-token"),
    ("not-found-logged-out", "anyone", "/no-such-page"),
]


def _axe_violations(page: Page) -> list[dict[str, Any]]:
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text())
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    violations: list[dict[str, Any]] = result["violations"]
    return violations


def _describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        for node in v["nodes"][:10]:
            lines.append(f"    {' > '.join(map(str, node['target']))}: {node.get('failureSummary', '')}")
            lines.append(f"      {node['html'][:200]}")
    return "\n".join(lines)


# Elements reaching past the viewport that are not inside a scrolling container (an absolutely placed one
# may escape it): what widens the page.
WIDER_THAN_THE_VIEWPORT = """width => {
  const found = [];
  for (const el of document.body.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 1) continue;
    let scrolled = false;
    const placed = ['absolute', 'fixed'].includes(getComputedStyle(el).position);
    for (let up = el.parentElement; up && up !== document.body && !placed; up = up.parentElement) {
      const overflow = getComputedStyle(up).overflowX;
      if (overflow === 'auto' || overflow === 'scroll' || overflow === 'hidden') { scrolled = true; break; }
    }
    if (!scrolled) found.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
      + (typeof el.className === 'string' && el.className ? '.' + el.className.replace(/ +/g, '.') : '')
      + ' (right edge ' + Math.round(box.right) + ' px)');
  }
  return found.slice(0, 15);
}"""

# Words (runs of letters, digits and _) in table cells that are split over two lines. Only long tokens may
# break anywhere: emails, ids, paths, URLs (more than 12 characters without a space, with one of @/.:_ in
# them or in code or an element marked .wrap-any), or anything of more than 24 characters without a space.
LONG_TOKEN = 24
WORDS_BROKEN_IN_TABLES = r"""longToken => {
  const broken = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    const cell = parent && parent.closest('td, th');
    if (!cell || !parent.checkVisibility()) continue;
    for (const chunk of node.data.matchAll(/\S+/g)) {
      const token = /[@\/.:_]/.test(chunk[0]) || parent.closest('code, .wrap-any, .url');
      if (chunk[0].length > longToken || (chunk[0].length > 12 && token)) continue;
      for (const word of chunk[0].matchAll(/[\p{L}\p{N}_]{2,}/gu)) {
        const range = document.createRange();
        range.setStart(node, chunk.index + word.index);
        range.setEnd(node, chunk.index + word.index + word[0].length);
        const tops = [...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top));
        if (new Set(tops).size > 1) broken.push(`"${word[0]}" in ${cell.outerHTML.slice(0, 100)}`);
      }
    }
  }
  return broken.slice(0, 15);
}"""


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize(("name", "who", "visit"), PAGES, ids=[p[0] for p in PAGES])
def test_page_is_accessible(
    contexts: Contexts, world: World, name: str, who: str, visit: Visit, viewport: str
) -> None:
    page = contexts(who, viewport).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        if isinstance(visit, str):
            page.goto(visit.format(**vars(world)))
        else:
            visit(page, world)
        # a running job's page keeps its live log open: it is never idle
        page.wait_for_load_state("load" if name in STREAMING else "networkidle")
        expect(page.locator("h1").first).to_be_visible()
        screenshot(page, f"a11y-{viewport}-{name}")

        problems = []
        found = _axe_violations(page)
        # all of them, the moderate and minor ones too, for a look beside the screenshot
        (SCREENSHOTS / f"a11y-{viewport}-{name}.axe.json").write_text(json.dumps(found, indent=1))
        violations = [v for v in found if v["impact"] in FAILING_IMPACTS]
        if violations:
            problems.append(f"axe found (at {page.url}):\n{_describe(violations)}")
        broken = page.evaluate(WORDS_BROKEN_IN_TABLES, LONG_TOKEN)
        if broken:
            problems.append(f"words broken mid-word in table cells: {broken}")
        if viewport == "phone":
            # against the phone's width, not innerWidth: a phone (is_mobile) zooms out to show a page
            # wider than itself, and innerWidth grows with it
            width = VIEWPORTS[viewport]["width"]
            scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
            if scroll_width > width + 1:
                wide = page.evaluate(WIDER_THAN_THE_VIEWPORT, width)
                problems.append(f"it scrolls sideways at {width} px (it is {scroll_width} px wide): {wide}")
        if errors:
            problems.append(f"JavaScript errors: {errors}")
        assert not problems, f"{name} ({viewport}):\n" + "\n".join(problems)
    finally:
        page.close()


def test_the_upload_picker_shows_where_the_focus_is(contexts: Contexts) -> None:
    """ "Choose files…" is a label for a visually hidden file input: tabbing to the input must mark the
    label the way every other control is marked (the focus outline)."""
    page = contexts("admin", "desktop").new_page()
    try:
        page.goto("/files")
        picker = page.locator('label[for="file-picker"]')
        expect(picker).to_be_visible()
        before = picker.evaluate("el => getComputedStyle(el).outlineStyle")
        page.locator("#file-picker").focus()
        # the keyboard's way there (a mouse click does not show the outline)
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")
        expect(page.locator("#file-picker")).to_be_focused()
        outline = picker.evaluate(
            "el => [getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]"
        )
        assert before == "none"
        assert outline[0] == "solid" and float(outline[1].removesuffix("px")) >= 2, outline
        screenshot(page, "a11y-upload-picker-focused")
    finally:
        page.close()


NOT_PAGES = re.compile(
    r"/rows$|/parts$|/listing$|/status$|/log|\.(txt|zip|csv)$|/download/|/outputs/|/inputs/|/deliveries$|/ui/picker$|favicon"
)


def test_every_page_is_in_the_list() -> None:
    """A page added to the web UI must be added to PAGES too: every GET route of the web UI that answers
    with a whole page (not a fragment htmx polls, a download or a stream) matches a path visited above."""
    # a page reached by driving the browser: where it starts
    starts = [
        v if isinstance(v, str) else re.findall(r'goto\(f?"([^"]+)', getsource(v))[0] for _, _, v in PAGES
    ]
    visited = [re.sub(r"[?#].*", "", v) for v in starts]
    missing = []
    modules = (
        account,
        admin,
        admin_jobs,
        apps,
        auth,
        device_sessions,
        files,
        home,
        jobs,
        project_budget,
        projects,
        search,
    )
    for module in (*modules, webhooks, devices):
        for route in module.router.routes:
            if not isinstance(route, APIRoute) or "GET" not in route.methods or NOT_PAGES.search(route.path):
                continue
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", route.path)  # {job_id} -> one path segment
            if not any(re.fullmatch(pattern, path) for path in visited):
                missing.append(route.path)
    assert not missing, f"pages no accessibility test visits: {missing}"
