"""The audit review's HTTP routes (the page is static/review.html): the queue, the verdicts, the
figure and its exports, and the operator's confirmation of a proposed per-camera cutoff.

The handler (`routes.RouteHandler`, which `web.Handler` is) has already checked the Host and the
token; a POST is checked here for coming from this page (`same_origin`), then for its JSON body.
"""

from __future__ import annotations

import json
import logging
import math
import re
from http import HTTPStatus
from typing import Any

from dashboard import contracts
from dashboard.fieldrecall import FieldRecall
from dashboard.reviews import NOTE_MAX, VERDICTS
from dashboard.routes import RouteHandler as Handler

log = logging.getLogger(__name__)

AUDIT_ID = re.compile(r"[0-9a-f]{32}")
AUDIT_THUMB = re.compile(r"/api/audits/([0-9a-f]{32})\.jpg")
AUDIT_JSON = re.compile(r"/api/audits/([0-9a-f]{32})")
CAMERA = re.compile(r"[^#+\x00-\x1f]{1,200}")  # what may follow set/cutoff/ in a published topic
MAX_BODY = 8192


class Refusal(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _recall(handler: Handler) -> FieldRecall:
    recall = handler.server.app.recall
    assert recall is not None  # App.__post_init__ makes one
    return recall


# -- GET ------------------------------------------------------------------------------------------
def get(handler: Handler, path: str, query: dict[str, list[str]]) -> bool:
    """Answer a review route; False when the path is not one."""
    try:
        return _get(handler, path, query)
    except Refusal as exc:
        handler._text(exc.status, str(exc))
        return True


def _get(handler: Handler, path: str, query: dict[str, list[str]]) -> bool:
    recall = _recall(handler)
    if path == "/api/review/next":
        audit, waiting = recall.reviews.queue(_trap(query), _camera(query))
        handler._json({"audit": audit, "waiting": waiting})
    elif m := AUDIT_THUMB.fullmatch(path):
        data = recall.reviews.thumbnail(m.group(1))
        if data is None:
            handler._text(HTTPStatus.NOT_FOUND, "no thumbnail")
        else:
            handler._send(200, data, "image/jpeg")
    elif m := AUDIT_JSON.fullmatch(path):
        audit = recall.reviews.audit(m.group(1))
        handler._json({"audit": audit}, 200 if audit else HTTPStatus.NOT_FOUND)
    elif path == "/api/reviews":
        handler._json({"reviews": recall.reviews.recent(handler._int(query, "limit", 20, 1, 500))})
    elif path == "/api/recall":
        handler._json(recall.export(_trap(query)))
    elif path == "/api/recall.csv":
        _download(handler, recall.csv_text(_trap(query)), "blankfilter-field-recall", query)
    elif path == "/api/labels.csv":
        _download(handler, recall.labels_csv(_trap(query)), "blankfilter-audit-labels", query)
    else:
        return False
    return True


def _trap(query: dict[str, list[str]]) -> str | None:
    trap = query.get("trap", [""])[0] or None
    if trap is not None and not contracts.is_trap_id(trap):
        raise Refusal(HTTPStatus.BAD_REQUEST, "trap: not a trap id")
    return trap


def _camera(query: dict[str, list[str]]) -> str | None:
    camera = query.get("camera", [""])[0] or None
    if camera is not None and not CAMERA.fullmatch(camera):
        raise Refusal(HTTPStatus.BAD_REQUEST, "camera: not a camera name")
    return camera


def _download(handler: Handler, text: str, stem: str, query: dict[str, list[str]]) -> None:
    trap = _trap(query)
    name = stem + (f"-{trap}" if trap else "") + ".csv"
    handler._send(200, text.encode("utf-8"), "text/csv; charset=utf-8",
                  {"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


# -- POST -----------------------------------------------------------------------------------------
def post(handler: Handler, path: str) -> None:
    try:
        if not handler.bearer_authorised():
            same_origin(handler)
        body = _body(handler)
        if path == "/api/reviews":
            handler._json({"audit": _review(handler, body)})
        elif path == "/api/reviews/undo":
            handler._json({"undone": _undo(handler, body)})
        elif path == "/api/cutoff":
            handler._json(_confirm_cutoff(handler, body))
        else:
            raise Refusal(HTTPStatus.NOT_FOUND, "not found")
    except Refusal as exc:
        handler._text(exc.status, str(exc))


def same_origin(handler: Handler) -> None:
    """A cross-site page may make a browser POST here with its cookie: only this page's own
    requests (Origin, or Referer when a client sends no Origin, naming this Host) get through."""
    host = handler.headers.get("Host", "").lower()
    mine = {f"http://{host}", f"https://{host}"}
    origin = handler.headers.get("Origin")
    if origin is not None:
        if origin.lower() not in mine:
            raise Refusal(HTTPStatus.FORBIDDEN, "cross-site request refused (Origin is not this monitor)")
        return
    referer = handler.headers.get("Referer", "").lower()
    if not any(referer.startswith(m + "/") for m in mine):
        raise Refusal(HTTPStatus.FORBIDDEN, "cross-site request refused (no Origin or Referer of this monitor)")


def _body(handler: Handler) -> dict[str, Any]:
    ctype = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
    try:
        length = int(handler.headers.get("Content-Length", ""))
    except ValueError:
        raise Refusal(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
    if not 0 < length <= MAX_BODY:
        raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of 1 to {MAX_BODY} bytes")
    try:
        body = json.loads(handler.rfile.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refusal(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise Refusal(HTTPStatus.BAD_REQUEST, "the body is not a JSON object")
    return body


def _audit_id(body: dict[str, Any], required: bool = True) -> str | None:
    value = body.get("id")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not AUDIT_ID.fullmatch(value):
        raise Refusal(HTTPStatus.BAD_REQUEST, "id: an audit id (32 hex digits)")
    return value


REVIEWER = re.compile(r"[^\x00-\x1f\x7f]{1,80}")  # a person's name or initials, as typed


def _who(handler: Handler, body: dict[str, Any]) -> str:
    """Who answers: the reviewer's own name when the page sends one (one token is shared by a team,
    so "token" alone cannot tell two reviewers apart), with how they got in: "Ana (token)"."""
    name = body.get("reviewer")
    if name is None or name == "":
        return handler.who
    if not isinstance(name, str) or not REVIEWER.fullmatch(name.strip()):
        raise Refusal(HTTPStatus.BAD_REQUEST, "reviewer: a name of 1 to 80 characters, no control characters")
    return f"{name.strip()} ({handler.who})"


def _review(handler: Handler, body: dict[str, Any]) -> dict[str, Any]:
    audit_id = _audit_id(body)
    assert audit_id is not None
    verdict, note = body.get("verdict"), body.get("note", "")
    if verdict not in VERDICTS:
        raise Refusal(HTTPStatus.BAD_REQUEST, f"verdict: one of {', '.join(VERDICTS)}")
    if not isinstance(note, str) or len(note) > NOTE_MAX:
        raise Refusal(HTTPStatus.BAD_REQUEST, f"note: text of at most {NOTE_MAX} characters")
    recall = _recall(handler)
    try:
        view = recall.reviews.review(audit_id, verdict, note.strip(), who := _who(handler, body))
    except KeyError:
        raise Refusal(HTTPStatus.NOT_FOUND, "no such audit") from None
    log.info("audit %s reviewed: %s (by %.100r)", audit_id, verdict, who)
    _announce(handler, view["trap"])
    return view


def _undo(handler: Handler, body: dict[str, Any]) -> str | None:
    recall = _recall(handler)
    who = _who(handler, body)
    undone = recall.reviews.undo(who, _audit_id(body, required=False))
    if undone is not None:
        view = recall.reviews.audit(undone)
        log.info("review of audit %s undone (by %.100r)", undone, who)
        if view is not None:
            _announce(handler, view["trap"])
    return undone


def _announce(handler: Handler, trap: str) -> None:
    handler.server.app.hub.publish("recall", {"trap": trap, "cameras": _recall(handler).cameras(trap)})


def _confirm_cutoff(handler: Handler, body: dict[str, Any]) -> dict[str, Any]:
    """Publish the proposal the operator saw, only if it is still the monitor's proposal now and the
    trap takes remote cutoffs."""
    trap, camera, cutoff = body.get("trap"), body.get("camera"), body.get("cutoff")
    if not isinstance(trap, str) or not contracts.is_trap_id(trap):
        raise Refusal(HTTPStatus.BAD_REQUEST, "trap: a trap id")
    if not isinstance(camera, str) or not CAMERA.fullmatch(camera):
        raise Refusal(HTTPStatus.BAD_REQUEST, "camera: a camera name")
    if isinstance(cutoff, bool) or not isinstance(cutoff, int | float) or not math.isfinite(cutoff):
        raise Refusal(HTTPStatus.BAD_REQUEST, "cutoff: a number")
    app, recall = handler.server.app, _recall(handler)
    entry = recall.camera(trap, camera)
    proposal = entry["proposal"] if entry else None
    if proposal is None or proposal["cutoff"] is None:
        raise Refusal(HTTPStatus.CONFLICT, "no cutoff is proposed for this camera now")
    if abs(proposal["cutoff"] - cutoff) > 1e-9:
        raise Refusal(HTTPStatus.CONFLICT, f"the proposal is now {proposal['cutoff']}: reload and confirm again")
    if not proposal["remote_cutoff"]:
        raise Refusal(HTTPStatus.CONFLICT, "the trap does not take remote cutoffs (mqtt.remote_cutoff = false)")
    if app.publish is None:
        raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "this monitor cannot publish")
    topic = contracts.set_cutoff_topic(app.prefix, trap, camera)
    if not app.publish(topic, contracts.cutoff_payload(proposal["cutoff"])):
        raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "the broker did not take it (not connected?): try again")
    recall.reviews.log_cutoff(trap, camera, proposal["cutoff"], who := _who(handler, body))
    log.warning("cutoff %.4g for %s camera %.80r confirmed by %.100r and published on %s",
                proposal["cutoff"], trap, camera, who, topic)  # fmt: skip
    return {"published": topic, "cutoff": proposal["cutoff"]}
