"""The pages in a real browser: Debian's Chromium (`make test` installs it), driven by Playwright, against one real
`visapp serve` on loopback shared by the module (its store a folder, its queue SQLite, one worker in the process).

A person signs in with the token, uploads a dataset with a planted finding and sees it flagged with its thumbnail,
starts a 1-epoch training and watches the page follow it to its end, downloads the model and tries it on an image.
A wrong token and a form without its CSRF token are refused, another token's job is not there, and signing out
ends the session. Every page visited is checked by axe-core (kept in tests/service/axe: no violation of WCAG 2.0
or 2.1 level A or AA), at 360 px wide and on a desktop, and photographed: the screenshots are kept under pytest's
temporary folder (`pages-screenshots*`), never committed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import VENV_BIN
from factory import Obj, write_sample, zip_folder
from service.conftest import OTHER_TOKEN, TOKEN, Service, client, csrf_of, signed_in, upload, wait_for
from service.test_security import service_env

pytestmark = pytest.mark.slow  # one 1-epoch training

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
AXE = Path(__file__).parent / "axe" / "axe.min.js"
LEVELS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
PHONE, DESKTOP = {"width": 360, "height": 780}, {"width": 1280, "height": 900}
CLASSES = "circle,square,triangle"


@dataclass
class Served:
    url: str
    job_id: str  # TOKEN's job, uploaded through the API: the one the training test trains
    planted: Path  # the dataset with a planted finding, as a ZIP
    shots: Path


def planted_zip(folder: Path) -> Path:
    """The sample's first 12 images and a sample whose square is labelled twice (box_duplicate, a warning)."""
    subprocess.run([str(VENV_BIN / "visapp"), "sample", "--out", str(folder), "--images", "12"], check=True,
                   capture_output=True)  # fmt: skip
    write_sample(folder, "twice", objects=[Obj("square", (10, 10, 40, 40)), Obj("square", (10, 10, 40, 40))])
    path = folder.with_suffix(".zip")
    path.write_bytes(zip_folder(folder))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, mlflow_server):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Chromium is not installed: `make test` installs it (Debian's chromium package)")
    root = tmp_path_factory.mktemp("pages")
    base = root / "svc"
    base.mkdir()
    service = Service(base, service_env(base, mlflow_server.uri))
    try:
        api_proc = service.api()
        planted = planted_zip(root / "planted")
        with client(api_proc.url) as api:
            job_id = upload(api, planted.read_bytes(), CLASSES).json()["job_id"]
        yield Served(api_proc.url, job_id, planted, tmp_path_factory.mktemp("pages-screenshots"))
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser):
    """Factory: a page in a fresh browser context (no cookies), at a viewport."""
    contexts = []

    def factory(viewport: dict[str, int] = DESKTOP):
        context = browser.new_context(viewport=viewport, accept_downloads=True)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield factory
    for context in contexts:
        context.close()


def checked(page, served: Served, name: str) -> None:
    """axe-core on the page as it is (no violation of level A or AA), no sideways scrolling of the page itself, and
    a screenshot of the whole page."""
    page.evaluate(AXE.read_text(encoding="utf-8"))
    violations = page.evaluate(
        "async (levels) => (await axe.run(document, {runOnly: {type: 'tag', values: levels}})).violations"
        ".map(v => `${v.id} (${v.impact}): ${v.help}: ${v.nodes.map(n => n.target.join(' ')).slice(0, 3)}`)",
        LEVELS,
    )
    assert violations == [], f"{name}: {violations}"
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{name} scrolls sideways at {width} px"
    page.screenshot(path=str(served.shots / f"{name}-{width}.png"), full_page=True)


def sign_in(page, served: Served, token: str = TOKEN) -> None:
    page.goto(f"{served.url}/ui/")
    page.fill("#token", token)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{served.url}/ui/")


# ---------------------------------------------------------------- signing in


def test_a_wrong_token_is_refused_and_the_right_one_signs_in_by_keyboard(served, open_page):
    page = open_page(PHONE)
    page.goto(f"{served.url}/ui/jobs/{served.job_id}")  # not signed in: to the sign-in page, and back after it
    assert "/ui/sign-in" in page.url
    checked(page, served, "sign-in")
    page.fill("#token", "not-a-token-of-this-service")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button:has-text('Sign in')")
    assert answer.value.status == 401
    assert "not a token of this service" in page.inner_text("[role=alert]")
    assert not [c for c in page.context.cookies() if c["name"] == "visapp_session"]
    checked(page, served, "sign-in-refused")

    page.keyboard.press("Tab")  # the skip link first: to the content, whose first field is the token's
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{served.url}/ui/jobs/{served.job_id}")
    session = next(c for c in page.context.cookies() if c["name"] == "visapp_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > time.time()
    assert not session["secure"]  # plain HTTP here; over HTTPS it is Secure (test_the_cookie_is_secure_over_https)


def test_the_cookie_is_secure_over_https_and_the_api_still_wants_its_bearer_token(served):
    with httpx.Client(base_url=served.url, follow_redirects=False) as http:
        csrf = csrf_of(http.get("/ui/sign-in").text)
        signed = http.post("/ui/sign-in", data={"token": TOKEN, "csrf": csrf, "next": "/ui/"},
                           headers={"X-Forwarded-Proto": "https"})  # fmt: skip
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "visapp_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
    with signed_in(served.url) as pages:
        assert pages.get(f"/jobs/{served.job_id}").status_code == 401  # a session is no token for the API
        assert pages.get("/openapi.json").json()["paths"].keys().isdisjoint({"/ui/", "/ui/sign-in", "/"})


def test_what_the_api_refuses_a_page_says_in_words(served):
    """An API refusal (409), an unknown page (404) and a bad query (422), each a page in words: never JSON."""
    with signed_in(served.url) as pages:
        csrf = csrf_of(pages.get("/ui/upload").text)
        answers = {
            409: pages.post(f"/ui/jobs/{served.job_id}/cancel", data={"csrf": csrf}),
            404: pages.get("/ui/no-such-page"),
            422: pages.get("/ui/?page=0"),
        }
    for status, answer in answers.items():
        assert answer.status_code == status and answer.headers["content-type"].startswith("text/html"), answer.text
        assert '<div class="alert" role="alert">' in answer.text and '{"error"' not in answer.text
    assert "nothing to cancel" in answers[409].text


# ---------------------------------------------------------------- an upload, its report and thumbnails


def test_an_upload_with_a_planted_finding_shows_it_flagged_with_its_thumbnail(served, open_page):
    page = open_page(DESKTOP)
    sign_in(page, served)
    checked(page, served, "jobs")
    page.click("text=Upload a dataset")
    checked(page, served, "upload")
    page.set_input_files("#file", str(served.planted))
    page.fill("#classes", CLASSES)
    page.click("button:has-text('Upload and check')")
    page.wait_for_url(f"{served.url}/ui/jobs/*")
    assert page.inner_text("#status .state") == "ready"
    row = page.locator("table.issues tr", has_text="box_duplicate")
    assert "Annotations/twice.xml" in row.inner_text() and "warning" in row.inner_text()
    thumbnail = page.locator("#flagged figure", has_text="JPEGImages/twice.jpg")
    assert "box_duplicate" in thumbnail.inner_text()
    image = thumbnail.locator("img")
    image.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    page.select_option("#report-code", "box_duplicate")
    page.click("button:has-text('Show')")
    assert page.locator("table.issues tbody tr").count() == 1
    page.locator("#figures img").last.scroll_into_view_if_needed()
    checked(page, served, "job-report")


# ---------------------------------------------------------------- a training, watched; the model


def test_a_one_epoch_training_is_watched_to_its_end_and_its_model_downloaded(served, open_page):
    page = open_page(DESKTOP)
    sign_in(page, served)
    page.goto(f"{served.url}/ui/jobs/{served.job_id}")
    assert page.input_value("#train-epochs") == "40"  # the job's params: conf/'s
    assert page.get_attribute("#train-epochs", "max") == "100000"  # TrainConfig's range
    for name, value in {"epochs": "1", "imgsz": "64", "batch": "3", "workers": "0", "device": "cpu"}.items():
        page.fill(f"#train-{name}", value)
    page.fill("#train-extra", page.input_value("#train-extra") + "\nplots: false")
    page.click("button:has-text('Start the training')")
    page.wait_for_selector("#auto-update", state="visible")  # the page follows the training by itself
    page.wait_for_selector("#status .state-succeeded", timeout=300_000)
    assert page.locator("#curve svg[role=img] polyline").count() >= 2  # losses and mAP, one epoch each
    assert page.locator("#curve details tbody tr").count() == 1
    checked(page, served, "job-trained")

    with page.expect_download() as download:
        page.click("text=Download the model")
    weights = Path(download.value.path()).read_bytes()
    with client(served.url) as api:
        assert weights == api.get(f"/download/model/{served.job_id}").content
        assert api.get(f"/jobs/{served.job_id}").json()["attempts"][-1]["overrides"] == {
            "epochs": 1, "imgsz": 64, "batch": 3, "workers": 0, "device": "cpu", "extra": {"plots": False}
        }  # fmt: skip

    page.set_input_files("#predict-image", str(served.planted.with_suffix("") / "JPEGImages" / "000001.jpg"))
    page.fill("#predict-confidence", "0.01")
    page.click("button:has-text('Find the objects')")
    assert "000001.jpg:" in page.inner_text("figcaption")
    checked(page, served, "predict")

    page.set_viewport_size(PHONE)
    page.goto(f"{served.url}/ui/jobs/{served.job_id}")
    checked(page, served, "job-trained")


# ---------------------------------------------------------------- refusals


def test_a_form_without_its_csrf_token_is_refused(served, open_page):
    page = open_page(PHONE)
    sign_in(page, served)
    page.goto(f"{served.url}/ui/jobs/{served.job_id}")
    again = page.locator("summary", has_text="Train again")
    if again.count():  # after a training, the form is folded
        again.click()
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(input => input.remove())")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("button:has-text('Start the training')")
    assert answer.value.status == 403
    assert "security token is missing" in page.inner_text("[role=alert]")
    checked(page, served, "refused")
    with client(served.url) as api:
        assert api.get(f"/jobs/{served.job_id}").json()["state"] in {"ready", "succeeded"}  # nothing queued


def test_another_tokens_job_is_not_there(served, open_page):
    page = open_page(PHONE)
    sign_in(page, served, OTHER_TOKEN)
    assert served.job_id not in page.content()
    for path in (f"/ui/jobs/{served.job_id}", f"/ui/jobs/{served.job_id}/thumbnails/0000.png",
                 f"/ui/jobs/{served.job_id}/model"):  # fmt: skip
        answer = page.goto(served.url + path)
        assert answer.status == 404, path
        assert "for this token" in page.inner_text("[role=alert]")
    checked(page, served, "not-found")


def test_the_models_page_and_signing_out(served, open_page):
    page = open_page(PHONE)
    sign_in(page, served)
    page.click("nav >> text=Models")
    assert "Git repository" in page.inner_text("[role=alert]")  # the service runs outside the project here
    checked(page, served, "models")
    session = next(c for c in page.context.cookies() if c["name"] == "visapp_session")
    page.click("button:has-text('Sign out')")
    assert "You have signed out" in page.inner_text("main")
    assert not [c for c in page.context.cookies() if c["name"] == "visapp_session"]
    page.context.add_cookies([session])  # the old cookie, sent again: the session is over
    page.goto(f"{served.url}/ui/")
    assert "/ui/sign-in" in page.url


def test_the_api_is_as_it_was(served):
    with client(served.url) as api:
        assert wait_for(api, served.job_id, {"ready", "succeeded"})["id"] == served.job_id
    with client(served.url, token=None) as anonymous:
        refused = anonymous.get(f"/jobs/{served.job_id}")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        assert anonymous.get("/ui/", follow_redirects=False).headers["location"].startswith("/ui/sign-in")
