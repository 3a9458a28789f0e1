"""The pages' parts that need no server: the session cookie, the train form (from the API's declaration), the
training's chart."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers
from starlette.responses import Response

from visapp.composition import default_params
from visapp.config import params_dict
from visapp.service.pages import session as session_module
from visapp.service.pages.charts import HEIGHT, LEFT, RIGHT, TOP, WIDTH, charts, curve
from visapp.service.pages.forms import overrides_from, train_fields
from visapp.service.pages.session import SESSION_COOKIE, Sessions
from visapp.service.params import TrainOverrides
from visapp.service.records import Attempt, EpochMetrics, State

pytestmark = pytest.mark.unit

TOKENS = (b"token-one-0123456789", b"token-two-0123456789")


def cookie_of(response: Response, name: str = SESSION_COOKIE) -> tuple[str, str]:
    """(the cookie's value, its whole Set-Cookie header)."""
    header = next(v.decode() for k, v in response.raw_headers if k == b"set-cookie" and v.startswith(name.encode()))
    return header.split(";")[0].split("=", 1)[1], header


def request_with(value: str) -> Headers:
    return Headers({"cookie": f"{SESSION_COOKIE}={value}"})


def test_a_session_is_read_back_only_as_it_was_signed():
    sessions = Sessions(TOKENS)
    response = Response()
    sessions.start(response, "owner-hash", https=False)
    value, header = cookie_of(response)
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/ui" in header and "Max-Age=" in header
    assert "Secure" not in header
    found = sessions.read(request_with(value))
    assert found is not None and found.owner == "owner-hash" and len(found.csrf) >= 32
    assert sessions.read(request_with(value[:-2] + ("AA" if not value.endswith("AA") else "BB"))) is None
    assert Sessions(TOKENS[:1]).read(request_with(value)) is None  # other tokens, another key: every session ends
    assert sessions.read(Headers({})) is None


def test_over_https_the_cookie_is_secure():
    response = Response()
    Sessions(TOKENS).start(response, "owner-hash", https=True)
    assert "Secure" in cookie_of(response)[1]


def test_an_expired_session_is_refused(monkeypatch):
    sessions = Sessions(TOKENS)
    response = Response()
    sessions.start(response, "owner-hash", https=False)
    value, _ = cookie_of(response)
    monkeypatch.setattr(session_module, "MAX_AGE_S", -1)
    assert sessions.read(request_with(value)) is None


def test_signing_out_ends_the_session_in_this_process():
    sessions = Sessions(TOKENS)
    response = Response()
    sessions.start(response, "owner-hash", https=False)
    value, _ = cookie_of(response)
    found = sessions.read(request_with(value))
    assert found is not None
    ended = Response()
    sessions.end(ended, found, https=False)
    assert 'visapp_session="";' in cookie_of(ended)[1] or "Max-Age=0" in cookie_of(ended)[1]
    assert sessions.read(request_with(value)) is None


def test_the_train_form_is_the_api_declaration_with_the_jobs_defaults():
    defaults = params_dict(default_params())["train"]
    fields = {field.name: field for field in train_fields(defaults)}
    assert list(fields) == list(TrainOverrides.model_fields)
    assert (fields["epochs"].minimum, fields["epochs"].maximum, fields["epochs"].value) == (
        1,
        100_000,
        str(defaults["epochs"]),
    )
    assert fields["lr0"].above and fields["lr0"].step == "any"
    assert fields["optimizer"].kind == "select" and "AdamW" in fields["optimizer"].choices
    assert fields["cos_lr"].choices == ("false", "true")
    assert fields["extra"].kind == "yaml" and "nbs: 8" in fields["extra"].value


def test_only_what_differs_from_the_job_is_asked_and_bad_values_are_said():
    defaults = params_dict(default_params())["train"]
    form = {name: field.value for name, field in ((f.name, f) for f in train_fields(defaults))}
    assert overrides_from(form, defaults) == ({}, {})
    asked, errors = overrides_from({**form, "epochs": "1", "cos_lr": "true", "extra": form["extra"] + "\nplots: false"},
                                   defaults)  # fmt: skip
    assert errors == {} and asked == {"epochs": 1, "cos_lr": True, "extra": {"plots": False}}
    _, errors = overrides_from({**form, "epochs": "0", "imgsz": "big"}, defaults)
    assert set(errors) == {"epochs", "imgsz"} and "greater than or equal to 1" in errors["epochs"]
    _, errors = overrides_from({**form, "extra": "just words"}, defaults)
    assert "name: value" in errors["extra"]


def attempt(number: int, training: int, epochs: dict[int, float]) -> Attempt:
    points = [EpochMetrics(epoch=e, metrics={"box_loss": v, "mAP50": v / 10}) for e, v in epochs.items()]
    return Attempt(number=number, training=training, state=State.running, overrides={}, params={}, queued_at=0,
                   epoch_metrics=points)  # fmt: skip


def test_the_curve_joins_a_trainings_attempts_and_spans_every_epoch_asked():
    attempts = [attempt(1, 1, {1: 9.0}), attempt(2, 2, {1: 4.0, 2: 3.0}), attempt(3, 2, {2: 2.5, 3: 2.0})]
    points = curve(attempts, 2)
    assert [(p.epoch, p.metrics["box_loss"]) for p in points] == [(1, 4.0), (2, 2.5), (3, 2.0)]
    losses, quality = charts(points, epochs=5)
    assert losses.title == "Losses" and [line.name for line in losses.lines] == ["box_loss"]
    dots = losses.lines[0].dots
    assert dots[0][0] == LEFT and dots[-1][0] < WIDTH - RIGHT  # 3 of 5 epochs: the line has room to grow
    assert all(TOP <= y <= HEIGHT for _, y in dots)
    assert quality.y_ticks[-1][1] == "1.00"
    assert charts([], epochs=5) == []
