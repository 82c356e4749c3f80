"""A hostile visitor of a public Space (issue 19): each test reproduces one attack of the red-team report
(``shared/reviews/redteam.md``) through the core, the app's handlers, the app over loopback HTTP or the CLI.

Network traffic goes to 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from test_hostile_inputs import (
    _no_progress,
    _photo_file,
    _run_cli,
    _run_editing,
    _run_guided,
    edit,
    error_message,
    fresh_tmpdir,
    photo,
)
from test_images import png_header

from dit_translate import api, images
from dit_translate.errors import MissingWeightsError, TimeLimitError
from dit_translate.knobs import MAX_TEXT_CHARS
from dit_translate.store import ModelStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def app():
    import app as module

    return module


@pytest.fixture
def app_tmp(tmp_path_factory, monkeypatch):
    return fresh_tmpdir(tmp_path_factory, monkeypatch, "TMPDIR-visitor")


class _Refusing:
    """A store that must not be reached: the request is refused before any model (or tokenizer) runs."""

    def __getattr__(self, name):
        raise AssertionError(f"the store was used ({name}) for a request that should have been refused first")


# --------------------------------------------------------------------------- 1. deadlines


def test_a_deadline_stops_the_work_at_the_next_step_and_frees_memory(monkeypatch):
    """Finding 1: nothing stopped a running request. A ``Deadline`` watching the progress callback does, with a
    clear error, after the stopped run's memory was released."""
    edit()  # the model is loaded: the limit is spent on the steps
    freed, steps = [], []
    monkeypatch.setattr(api, "free_memory", lambda: freed.append(True))
    deadline = api.Deadline(0.5, "this edit request")
    slow = deadline.watch(lambda done, total, desc: (steps.append(done), time.sleep(0.2)))
    with pytest.raises(TimeLimitError, match=r"this edit request was stopped: it ran past its time limit of 0.5 s"):
        api.edit(api.EditRequest("sdedit", "a comic drawing", steps=50, strength=1.0, guidance=1.0), photo(),
                 progress=slow)
    assert 1 <= len(steps) <= 10 and freed  # stopped after ~0.5 s, long before the 50th step; memory released
    assert edit().image.shape[0] == 1  # the process serves the next request


@pytest.mark.parametrize("endpoint", ["edit", "guide", "translate"])
def test_every_tab_stops_at_its_time_limit(app, app_tmp, monkeypatch, endpoint):
    """Finding 1 through the app: ``time_limit`` on ``.click`` did nothing; each tab's ``TIME_LIMITS`` entry does."""
    monkeypatch.setitem(app.TIME_LIMITS, endpoint, 0)
    call = {"edit": lambda: _run_editing(app, photo()), "guide": lambda: _run_guided(app, photo()),
            "translate": lambda: app.run_paired(photo(), "tiny-dit", 2, 2.0, 0, progress=_no_progress)}[endpoint]
    with pytest.raises(app.gr.Error) as info:
        call()
    assert error_message(info.value).startswith(f"this {endpoint} request was stopped: it ran past its time limit")
    assert not list(app_tmp.rglob("*.png"))  # stopped before any output was written


def test_the_time_limits_are_the_ones_gradio_cannot_enforce(app):
    """No ``.click`` pretends to have a time limit (Gradio reads it for streaming events only)."""
    demo = app.build_demo()
    limits = {fn.api_name: fn.time_limit for fn in demo.fns.values() if fn.api_name in app.TIME_LIMITS}
    assert limits == {"edit": None, "guide": None, "translate": None}
    assert [fn.api_name for fn in demo.fns.values() if fn.time_limit is not None] == []  # no other tab either
    assert set(app.TIME_LIMITS) == {"edit", "guide", "translate"}


# --------------------------------------------------------------------------- 2. repeated methods


def test_repeated_methods_run_once_each(app, app_tmp):
    """Finding 2: ``methods=["sdedit"]*5`` ran five SDEdits in one request."""
    gallery, table, files, _ = _run_editing(app, photo(), methods=["sdedit", "correct", "sdedit"])
    assert [caption for _, caption in gallery] == ["Source", "SDEdit", "Correction (released)"]
    assert len(table["data"]) == 2 and len(files) == 2


def test_a_long_method_list_is_refused_before_any_work(app, app_tmp):
    """Finding 2: ``["pnp"]*10000`` (a 0.1 MB body worth days of CPU) is refused at once."""
    start = time.monotonic()
    with pytest.raises(app.gr.Error) as info:
        _run_editing(app, photo(), methods=["pnp"] * 10_000)
    assert error_message(info.value) == "methods: at most 3 entries (each method once), got 10000"
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(("methods", "message"), [
    ("sdedit", "methods must be a list of sdedit, correct, pnp, got str"),
    (["sdedit", "nope"], "unknown method 'nope'"),
    ([["sdedit"]], "unknown method ['sdedit']"),
])
def test_edit_methods_are_checked_in_the_core(methods, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        api.edit_methods(methods)


# --------------------------------------------------------------------------- 4 and 9. text


@pytest.mark.parametrize(("field", "request_kw"), [
    ("the prompt", {"prompt": "a" * (MAX_TEXT_CHARS + 1)}),
    ("the negative prompt", {"negative_prompt": "b" * (MAX_TEXT_CHARS + 1)}),
])
def test_over_long_prompts_are_refused_before_tokenizing(field, request_kw):
    """Finding 4: a 16 MB prompt took 56 s and +1.65 GB in the tokenizer. Refused by length, the store (and so
    the tokenizer) never reached."""
    request = api.EditRequest(**{"method": "sdedit", "prompt": "a comic drawing", **request_kw})
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        api.edit(request, photo(), store=_Refusing())
    assert str(info.value) == f"{field} is too long: {MAX_TEXT_CHARS + 1} characters, the limit is {MAX_TEXT_CHARS}"
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("field", ["text", "source_text"])
def test_over_long_agg_texts_are_refused(field):
    texts = {"text": "a comic drawing", field: "c" * 16_000_000}
    name = {"text": "the target text", "source_text": "the source text"}[field]
    with pytest.raises(ValueError, match=f"^{name} is too long: 16000000 characters"):
        api.guide(api.GuideRequest(**texts), photo(), store=_Refusing())


def test_the_text_boxes_have_a_max_length(app):
    demo = app.build_demo()
    boxes = [b for b in demo.blocks.values() if type(b).__name__ == "Textbox"]
    assert {b.label for b in boxes} >= {"Prompt", "Target text"}
    assert all(b.max_length == MAX_TEXT_CHARS for b in boxes)


@pytest.mark.parametrize(("kw", "field"), [
    ({"prompt": "\ud800 comic"}, "the prompt"),
    ({"prompt": "a comic \udcff drawing"}, "the prompt"),  # how Python passes the byte 0xff of argv
    ({"negative_prompt": "x\udfff"}, "the negative prompt"),
])
def test_lone_surrogates_are_refused_naming_the_field(kw, field):
    """Finding 9: a lone surrogate reached the tokenizer (TypeError, a 43-line traceback in the CLI)."""
    request = api.EditRequest(**{"method": "sdedit", "prompt": "a comic drawing", **kw})
    with pytest.raises(ValueError, match=f"^{field} is not valid text: character \\d+ is an undecodable byte"):
        api.edit(request, photo(), store=_Refusing())


def test_lone_surrogates_in_agg_texts_and_the_app(app, app_tmp):
    with pytest.raises(ValueError, match="^the target text is not valid text"):
        api.guide(api.GuideRequest(text="comic \udcff"), photo(), store=_Refusing())
    with pytest.raises(app.gr.Error) as info:
        _run_guided(app, photo(), source_text="\ud800")
    assert error_message(info.value).startswith("the source text is not valid text")
    with pytest.raises(app.gr.Error) as info:
        _run_editing(app, photo(), prompt="\ud800 comic")
    assert error_message(info.value).startswith("the prompt is not valid text")


@pytest.mark.parametrize("command", [["edit", "--method", "sdedit", "--prompt"], ["guide", "--text"]])
def test_cli_process_undecodable_bytes_are_one_line(tmp_path, command):
    """Finding 9 in a real process: the byte 0xff in argv (rc 1 and 43 lines before)."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable.encode(), b"-m", b"dit_translate", *map(str.encode, command), b"a comic \xff drawing",
            b"--image", str(_photo_file(tmp_path)).encode(), b"--out", str(tmp_path / "o.png").encode()]
    proc = subprocess.run(args, capture_output=True, env=env, cwd=ROOT, timeout=300)
    lines = proc.stderr.decode(errors="replace").splitlines()
    assert proc.returncode == 2 and len(lines) == 1, lines
    field = "the prompt" if command[0] == "edit" else "the target text"
    assert lines[0].startswith(f"error: {field} is not valid text: character 8 is an undecodable byte")
    assert not (tmp_path / "o.png").exists()


def test_cli_leaves_no_torchinductor_folder_in_tmpdir(tmp_path):
    """Finding 13: importing torch created ``$TMPDIR/torchinductor_<user>``; the variable that would hide this is
    removed from the environment here, and the cache goes to ``$XDG_CACHE_HOME/dit-translate``."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env.update(TMPDIR=str(tmp), XDG_CACHE_HOME=str(cache), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "dit_translate", "edit", "--method", "sdedit", "--prompt", "a comic",
                           "--steps", "2", "--image", str(_photo_file(tmp_path)), "--out", str(tmp_path / "o.png")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp.iterdir()) == []
    code = "import dit_translate, os; print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert probe.stdout.strip() == str(cache / "dit-translate" / "torchinductor")


# --------------------------------------------------------------------------- 6, 11. the output folder


def test_a_symlinked_output_folder_is_refused_and_nothing_is_pruned(app, app_tmp, tmp_path):
    """Finding 6: ``<tmp>/dit-translate-outputs`` was followed through a symlink and pruning deleted the
    target's folders."""
    victim = tmp_path / "victim"
    for name in ("projectA", "photos", "run-abc"):
        (victim / name).mkdir(parents=True)
        os.utime(victim / name, (time.time() - 7200,) * 2)
    app.output_root().symlink_to(victim)
    with pytest.raises(app.gr.Error) as info:
        _run_editing(app, photo())
    assert error_message(info.value).endswith("': it is a symlink")
    assert sorted(p.name for p in victim.iterdir()) == ["photos", "projectA", "run-abc"]


def test_an_output_folder_open_to_others_is_refused(app, app_tmp):
    app.output_root().mkdir(mode=0o777)
    os.chmod(app.output_root(), 0o777)
    with pytest.raises(app.gr.Error) as info:
        _run_editing(app, photo())
    assert error_message(info.value).endswith("it is not a private folder of this user (owner or mode)")


def test_pruning_removes_only_our_own_run_folders(app, app_tmp, tmp_path, monkeypatch):
    """Only real ``run-*`` folders are pruned: other entries and symlinks (to anywhere) are left alone."""
    root = app.output_root()
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "notes").mkdir()
    (root / "run-link").symlink_to(elsewhere)
    old = (root / "run-old")
    old.mkdir()
    for path in (root / "notes", old):
        os.utime(path, (time.time() - app.OUTPUT_MAX_AGE - 60,) * 2)
    gallery, *_ = _run_editing(app, photo())
    kept = ["notes", "run-link", Path(gallery[0][0]).parent.name]
    assert sorted(p.name for p in root.iterdir()) == sorted(kept)
    assert elsewhere.is_dir()


def test_the_output_folder_is_per_user(app):
    """A second user of the host is not locked out by the first one's folder."""
    assert app.OUTPUT_FOLDER == f"dit-translate-outputs-{os.getuid()}"


def test_the_sweeper_prunes_without_requests_and_removes_untracked_uploads(app, app_tmp, monkeypatch, tmp_path):
    """Findings 11 and 5: old outputs and the bytes of refused uploads (``tmp*`` files nobody tracks) outlived
    the process; pruning ran only when a request arrived. Now at start and on a timer."""
    uploads = tmp_path / "gradio"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    root = app.output_root()
    root.mkdir(mode=0o700)
    aged = time.time() - app.OUTPUT_MAX_AGE - 60
    (root / "run-old").mkdir()
    os.utime(root / "run-old", (aged, aged))
    (root / "run-new").mkdir()
    leaked, young, tracked = uploads / "tmpabc123", uploads / "tmpyoung", uploads / "0123abcd"
    for path in (leaked, young, tracked):
        path.write_bytes(b"x" * 100)
    os.utime(leaked, (aged, aged))
    stop = app.start_sweeper(every=0.05)
    try:
        for _ in range(100):
            if not leaked.exists() and not (root / "run-old").exists():
                break
            time.sleep(0.05)
        (root / "run-late").mkdir()
        os.utime(root / "run-late", (aged, aged))
        for _ in range(100):  # the timer, not a request, removes it
            if not (root / "run-late").exists():
                break
            time.sleep(0.05)
    finally:
        stop.set()
    assert sorted(p.name for p in root.iterdir()) == ["run-new"]
    assert sorted(p.name for p in uploads.iterdir()) == ["0123abcd", "tmpyoung"]


def test_main_starts_the_sweeper(app, monkeypatch):
    started, launched = [], []
    monkeypatch.setattr(app, "start_sweeper", lambda: started.append(True))
    monkeypatch.setattr(app.gr.Blocks, "launch", lambda self, **kw: launched.append(kw))
    monkeypatch.setattr(sys, "argv", ["app.py"])
    app.main()
    assert started == [True] and launched


# --------------------------------------------------------------------------- 12. logs


def test_user_errors_log_one_line_and_no_traceback(app, app_tmp, caplog):
    """Finding 12: every rejected request logged a ~35-line traceback (gradio prints it unless told not to)."""
    with caplog.at_level("WARNING", logger="dit_translate.app"), pytest.raises(app.gr.Error) as info:
        _run_editing(app, photo(), strength=float("nan"))
    assert info.value.print_exception is False
    assert [r.getMessage() for r in caplog.records] == ["refused: strength must be in (0.0, 1.0], got nan"]


# --------------------------------------------------------------------------- 13. CLI corner cases


def test_cli_process_a_fifo_as_image_does_not_hang(tmp_path):
    """Finding 13: ``mkfifo x.png; edit --image x.png`` blocked forever inside ``open()``."""
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    proc = _run_cli(["edit", "--method", "sdedit", "--image", str(fifo), "--prompt", "x",
                     "--out", str(tmp_path / "o.png")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: cannot read image 'x.png': it is not a regular file (a pipe, device "
                                        "or socket)"]


def test_an_existing_folder_as_out_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    from dit_translate.cli import main

    monkeypatch.setattr(api, "edit", lambda *a, **k: pytest.fail("the work ran"))
    (tmp_path / "adir.png").mkdir()
    rc = main(["edit", "--method", "sdedit", "--image", str(_photo_file(tmp_path)), "--prompt", "x",
               "--out", str(tmp_path / "adir.png")])
    assert rc == 2
    assert capsys.readouterr().err == "error: cannot save image 'adir.png': it is an existing folder, not a file\n"


@pytest.mark.parametrize("length", [238, 250, 255])
def test_long_legal_file_names_can_be_written(tmp_path, length):
    """Finding 13: the temporary ``.<name>.<hex>.tmp`` pushed 238-254-character names past the limit."""
    path = tmp_path / ("a" * (length - 4) + ".png")
    images.save_image(photo(), path)
    assert Image.open(path).size == (48, 32) and [p.name for p in tmp_path.iterdir()] == [path.name]


# --------------------------------------------------------------------------- 7. preset switching


def test_a_failing_preset_request_keeps_the_loaded_model():
    """Finding 7: asking for ``sd15`` (weights missing offline) evicted the loaded tiny model first."""
    store = ModelStore()
    loaded = store.get("tiny")
    with pytest.raises(MissingWeightsError):
        store.get("sd15")
    assert store.get("tiny") is loaded


def test_resolving_a_preset_does_not_block_models_in_memory(monkeypatch, tiny_paired_store):
    """Finding 7: the store lock was held while a preset resolved (or downloaded): a request for a model
    already in memory waited for it (7.9 s for a simulated 8 s resolve)."""
    import dit_translate.store as store_module

    store, paired = tiny_paired_store
    real = store_module.resolve_folder

    def slow(preset):
        time.sleep(2)
        return real(preset)

    monkeypatch.setattr(store_module, "resolve_folder", slow)
    errors = []
    worker = threading.Thread(target=lambda: _record(errors, lambda: store.get("sd15")))
    worker.start()
    time.sleep(0.2)
    start = time.monotonic()
    assert store.get_paired("tiny-dit") is paired
    assert time.monotonic() - start < 0.5
    worker.join()
    assert len(errors) == 1 and isinstance(errors[0], MissingWeightsError)


def _record(errors: list, call) -> None:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - handed to the test
        errors.append(e)


@pytest.fixture
def tiny_paired_store():
    store = ModelStore()
    return store, store.get_paired("tiny-dit")


# --------------------------------------------------------------------------- 8. big images


def test_large_jpegs_are_decoded_reduced(tmp_path):
    """Finding 8: a 40 MP photo cost +480 MB to decode; a large JPEG now decodes at 1/2, 1/4 or 1/8."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (200, 30, 30)).save(path, quality=50)
    img = images.load_image(path)
    assert img.size == (3000, 2000) and img.getpixel((10, 10))[0] > 180  # 1/2 keeps >= 4 MP
    small = tmp_path / "small.jpg"
    Image.new("RGB", (1200, 800), (200, 30, 30)).save(small)
    assert images.load_image(small).size == (1200, 800)


def test_the_app_accepts_fewer_pixels_than_the_core(app, app_tmp, tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header(5000, 4000))
    with pytest.raises(app.gr.Error) as info:
        _run_editing(app, str(path))
    assert error_message(info.value) == ("cannot read image 'big.png': the image is too large (5000x4000 = 20.0 "
                                         "megapixels, the limit is 16.0)")


# --------------------------------------------------------------------------- 10 and 12 over HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app as ``app.main`` builds and queues it, served on 127.0.0.1."""
    import gradio as gr

    import app

    captured = {}

    def record(self, **kwargs):
        captured.update(kwargs, demo=self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gr.Blocks, "launch", record)
        mp.setattr(app, "start_sweeper", lambda: None)
        mp.setattr(sys, "argv", ["app.py"])
        app.main()
        mp.undo()
        mp.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
        demo = captured.pop("demo")
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                                max_file_size=captured["max_file_size"], app_kwargs=captured["app_kwargs"])
        yield url
        demo.close()


def _call(url: str, endpoint: str, data: list) -> dict:
    import httpx

    event_id = httpx.post(f"{url}gradio_api/call/{endpoint}", content=json.dumps({"data": data}),
                          headers={"content-type": "application/json"}, timeout=60).json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=300) as stream:
        lines = [line for line in stream.iter_lines() if line]
    kind = [line for line in lines if line.startswith("event: ")][-1].removeprefix("event: ")
    data = json.loads(lines[-1].removeprefix("data: "))
    return {"event": kind, "data": data["error"] if kind == "error" and isinstance(data, dict) else data}


@pytest.fixture(scope="module")
def uploaded(server):
    import httpx

    path = httpx.post(f"{server}gradio_api/upload", files={"files": ("photo.jpg", _jpeg_bytes())},
                      timeout=60).json()[0]
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def _jpeg_bytes() -> bytes:
    return (ROOT / "assets" / "examples" / "chelsea.jpg").read_bytes()


EDIT = ["a comic drawing", "tiny", 1.0, 2, 1.0, 0, ["sdedit"], "released", 10, 0]
"""The /edit knobs after the image: prompt, preset, strength, steps, guidance, seed, methods, variant, inversion,
working size (0 = the preset's)."""


@pytest.mark.parametrize(("index", "value", "message"), [
    (3, None, "steps must be a number, got None"),
    (3, "5", "steps must be a number, got '5'"),
    (3, [5], "steps must be a number, got [5]"),
    (2, None, "strength must be a number, got None"),
    (5, float("nan"), "seed must be a number, got nan"),
    (5, "1", "seed must be a number, got '1'"),
    (3, 1000, "steps: Value 1000 is greater than maximum value 100."),
])
def test_http_clients_get_the_knobs_name(server, uploaded, index, value, message):
    """Finding 10: null, string or NaN sliders and seed gave HTTP clients an error whose message was null."""
    knobs = list(EDIT)
    knobs[index] = value
    answer = _call(server, "edit", [uploaded, *knobs])
    assert answer == {"event": "error", "data": message}


def test_http_repeated_methods_are_refused(server, uploaded):
    knobs = list(EDIT)
    knobs[6] = ["pnp"] * 400
    assert _call(server, "edit", [uploaded, *knobs]) == {
        "event": "error", "data": "methods: at most 3 entries (each method once), got 400"}


def test_the_config_shows_no_server_paths(server):
    """Finding 12: ``/config`` held absolute server paths (the About tab's and the banners' preset summaries)."""
    import httpx

    config = httpx.get(f"{server}config", timeout=60).text
    assert str(ROOT) not in config and "assets/tiny/sd" in config


# --------------------------------------------------------------------------- 3. per-client limits


def _join(url: str, endpoint: str, data: list, **headers: str):
    import httpx

    return httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, headers=headers, timeout=60)


def test_one_client_cannot_fill_the_queue(server, uploaded, monkeypatch):
    """Finding 3: 17 quick POSTs, never read, filled the shared queue (16) and every tab answered "Queue is
    full". Now a client has at most ``CLIENT_MAX_JOBS`` requests in the queue; another client is still served."""
    import app
    from dit_translate.store import default_store

    monkeypatch.setattr(app, "TRUST_FORWARDED", True)  # as behind a Space's proxy: clients told apart by it
    lock = default_store().get("tiny").lock
    attacker, victim = {"x-forwarded-for": "10.0.0.1"}, {"x-forwarded-for": "10.9.9.9, 10.0.0.2"}
    with lock:  # every /edit blocks inside the core until released
        answers = [_join(server, "edit", [uploaded, *EDIT], **attacker) for _ in range(app.CLIENT_MAX_JOBS + 2)]
        assert [a.status_code for a in answers] == [200] * app.CLIENT_MAX_JOBS + [429, 429]
        assert answers[-1].json() == {"detail": "Too many requests: at most 3 at a time per client; wait for one "
                                                "to finish."}
        assert _join(server, "edit", [uploaded, *EDIT], **victim).status_code == 200
    for _ in range(600):  # once its requests have run (never read), the attacker may queue again
        if _join(server, "edit", [uploaded, *EDIT], **attacker).status_code == 200:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the client's finished requests still count against it")


def test_uploads_are_rate_limited_per_client(server, monkeypatch):
    import httpx

    import app

    monkeypatch.setattr(app, "CLIENT_UPLOADS", (3, 60))
    monkeypatch.setattr(app, "TRUST_FORWARDED", True)
    codes = [httpx.post(f"{server}gradio_api/upload", files={"files": ("p.jpg", b"x")},
                        headers={"x-forwarded-for": "10.0.0.7"}, timeout=60).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_an_upload_without_a_file_name_is_a_clean_refusal(server):
    """Finding 5: an empty file name gave HTTP 500 (``File is not an instance of GradioUploadFile``)."""
    import httpx

    answer = httpx.post(f"{server}gradio_api/upload", files={"files": ("", b"x" * 100)}, timeout=60)
    assert (answer.status_code, answer.json()) == (400, {"detail": "Invalid file name: every uploaded file needs "
                                                                   "a name."})
