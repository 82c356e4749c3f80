"""Security (issue 7): weights only through safetensors, no remote code, the app serves only its own
outputs, uploads are limited, no outbound calls beyond the model hub, tokens never logged."""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_paired_support import tiny_clip, write_preset  # noqa: F401 - fixture

from dit_translate.cli import main
from dit_translate.errors import CorruptWeightsError, MissingWeightsError
from dit_translate.store import ModelStore
from dit_translate.weights import ALLOW_PATTERNS, IGNORE_PATTERNS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "dit_translate").rglob("*.py")) + [ROOT / "app.py"]
TOKEN = "hf_secret123"

# --------------------------------------------------------------------------- static audit

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
CODE_BUILTINS = {"eval", "exec", "compile", "__import__"}
NO_WEIGHTS = ("Tokenizer", "Scheduler", "Config", "Processor")
"""``X.from_pretrained`` of these reads configs or vocabularies, never weights: no ``use_safetensors``."""


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain (``?`` for anything else, e.g. a call result)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def _keywords(call: ast.Call, dicts: dict[str, dict[str, ast.AST]]) -> dict[str, ast.AST]:
    """The call's keyword arguments, with ``**name`` expanded when ``name`` is a dict literal of the module."""
    out: dict[str, ast.AST] = {}
    for kw in call.keywords:
        if kw.arg is not None:
            out[kw.arg] = kw.value
        elif isinstance(kw.value, ast.Name):
            out.update(dicts.get(kw.value.id, {}))
    return out


def audit(source: str, filename: str) -> list[str]:
    """Unsafe loading or code execution in ``source``: one ``file:line: what`` finding each."""
    tree = ast.parse(source, filename)
    dicts = {  # name = {"key": value, ...} literals (for **name in calls)
        target.id: {k.value: v for k, v in zip(node.value.keys, node.value.values) if isinstance(k, ast.Constant)}
        for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        for target in node.targets if isinstance(target, ast.Name)
    }
    found = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"imports {module}")
            if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
                flag(node, "imports torch.load by name (unauditable calls)")
        if not isinstance(node, ast.Call):
            continue
        name, kw = _dotted(node.func), _keywords(node, dicts)
        if isinstance(node.func, ast.Name) and name in CODE_BUILTINS:
            flag(node, f"calls {name}()")
        if name.endswith("torch.load") and not _is_const(kw.get("weights_only"), True):
            flag(node, "torch.load without weights_only=True")
        if name.endswith("hub.load"):
            flag(node, f"{name} runs code from a hub repository")
        if name.split(".")[-1] in ("load", "unsafe_load") and name.split(".")[0] == "yaml":
            flag(node, f"{name} can build arbitrary objects")
        if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") and "allow_pickle" in kw \
                and not _is_const(kw["allow_pickle"], False):
            flag(node, "numpy load with allow_pickle")
        if "weights_only" in kw and _is_const(kw["weights_only"], False):
            flag(node, "weights_only=False")
        if "trust_remote_code" in kw and not _is_const(kw["trust_remote_code"], False):
            flag(node, "trust_remote_code enabled")
        if name.endswith(".from_pretrained") and not name.rsplit(".", 1)[0].endswith(NO_WEIGHTS) \
                and not _is_const(kw.get("use_safetensors"), True):
            flag(node, f"{name} without use_safetensors=True")
        if name.startswith("open_clip.create_model") and not _is_const(kw.get("weights_only"), True):
            flag(node, f"{name} without weights_only=True")
    return found


VIOLATIONS = textwrap.dedent("""
    import pickle
    import dill.settings
    from torch import load
    import numpy as np
    import yaml
    from diffusers import UNet2DConditionModel, DDIMScheduler
    eval("1 + 1")
    exec("x = 1")
    torch.load("w.bin")
    torch.load("w.bin", weights_only=False)
    torch.hub.load("repo", "model")
    np.load("a.npy", allow_pickle=True)
    yaml.load(text)
    AutoModel.from_pretrained("x", trust_remote_code=True)
    UNet2DConditionModel.from_pretrained("x")
    kw = {"torch_dtype": None}
    UNet2DConditionModel.from_pretrained("x", **kw)
    open_clip.create_model("local-dir:/x")
""")


def test_the_audit_finds_every_kind_of_violation():
    found = audit(VIOLATIONS, "bad.py")
    expected = ["imports pickle", "imports dill.settings", "imports torch.load by name", "calls eval()",
                "calls exec()", "torch.load without weights_only=True", "weights_only=False", "torch.hub.load runs",
                "numpy load with allow_pickle", "yaml.load can build", "trust_remote_code enabled",
                "UNet2DConditionModel.from_pretrained without use_safetensors=True",
                "open_clip.create_model without weights_only=True"]
    for what in expected:
        assert any(what in f for f in found), (what, found)
    # each once, except: torch.load (x2), UNet2DConditionModel.from_pretrained (x2) and AutoModel's call also
    # lacking use_safetensors
    assert len(found) == len(expected) + 3


def test_the_audit_accepts_the_safe_forms():
    safe = textwrap.dedent("""
        model.eval()
        torch.load("w.pt", map_location="cpu", weights_only=True)
        kw = {"torch_dtype": None, "use_safetensors": True}
        UNet2DConditionModel.from_pretrained("x", **kw)
        CLIPTokenizer.from_pretrained("x")
        DDIMScheduler.from_pretrained("x", subfolder="scheduler")
        AutoModel.from_pretrained("x", use_safetensors=True, trust_remote_code=False)
        np.load("a.npy")
        open_clip.create_model("ViT-B-32", pretrained="openai", weights_only=True)
    """)
    assert audit(safe, "safe.py") == []


def test_package_and_app_load_weights_safely():
    findings = [f for path in SOURCES for f in audit(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert findings == []
    assert len(SOURCES) > 40  # the whole package was scanned


@pytest.mark.parametrize(("function", "parameter"), [
    ("timm.models._helpers.load_state_dict", "weights_only"),
    ("timm.models._hub.load_state_dict_from_hf", "weights_only"),
    ("timm.models._hub.load_state_dict_from_path", "weights_only"),
    ("open_clip.factory.load_checkpoint", "weights_only"),
    ("open_clip.factory.load_state_dict", "weights_only"),
])
def test_third_party_loaders_default_to_weights_only(function, parameter):
    """timm.create_model takes no weights_only argument: pin the defaults its loaders use for .bin files."""
    import importlib

    module, name = function.rsplit(".", 1)
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    assert signature.parameters[parameter].default is True


def test_hub_downloads_only_fetch_safetensors_and_configs():
    from huggingface_hub.utils import filter_repo_objects

    repo = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/pytorch_model.bin", "text_encoder/model.safetensors", "vae/model.ckpt", "vae/weights.pt",
            "vae/weights.pth", "vae/flax_model.msgpack", "vae/model.onnx", "vae/evil.pkl", "tokenizer/vocab.json",
            "tokenizer/merges.txt", "v1-5-pruned.ckpt", "scheduler/scheduler_config.json", "custom_pipeline.py"]
    kept = set(filter_repo_objects(repo, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS))
    assert kept == {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                    "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                    "scheduler/scheduler_config.json"}


def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any ``torch.load`` (pickle) call fail the test."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("torch.load was called: a pickle was about to be read")

    monkeypatch.setattr(torch, "load", refuse)


def test_pickle_only_pipeline_is_refused_unread(tmp_path, random_sd_folder, monkeypatch):
    no_unpickling(monkeypatch)
    folder = tmp_path / "pickled"
    shutil.copytree(random_sd_folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))  # the same bytes under a pickle name: never to be opened
    with pytest.raises(MissingWeightsError, match=r"has no safetensors weights in unet; pickled weights .* never"):
        ModelStore("cpu").get("tiny", model=str(folder))


def test_corrupt_safetensors_is_a_clear_error(tmp_path, random_sd_folder):
    folder = tmp_path / "corrupt"
    shutil.copytree(random_sd_folder, folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    with pytest.raises(CorruptWeightsError, match=rf"cannot load preset 'tiny' from .*: the weights file "
                                                   rf"{re.escape(str(weights))} is truncated or corrupt"):
        ModelStore("cpu").get("tiny", model=str(folder))


def test_pickle_only_paired_checkpoint_is_refused_unread(tmp_path, tiny_clip, monkeypatch):  # noqa: F811
    """A user-supplied checkpoint folder (``translate --checkpoint``) whose network is a pickle."""
    from dit_translate.paired.checkpoint import CheckpointError
    from dit_translate.paired.loading import build_untrained, load_paired
    from dit_translate.presets import load_preset

    folder = build_untrained(load_preset(str(write_preset(tmp_path / "toy.toml", tiny_clip))), tmp_path)
    weights = folder / "model" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    no_unpickling(monkeypatch)
    with pytest.raises(CheckpointError, match="model/ holds no safetensors weights; pickled weights"):
        load_paired(folder)


def test_pickle_only_guidance_folder_is_refused_unread(tmp_path, monkeypatch):
    from dit_translate.guidance import Guidance
    from dit_translate.presets import load_preset

    no_unpickling(monkeypatch)
    (tmp_path / "dino").mkdir()
    (tmp_path / "dino" / "config.json").write_text("{}")
    (tmp_path / "dino" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    preset = tmp_path / "p.toml"
    preset.write_text('name = "p"\nkind = "pixel"\nmodel = "./m"\n[guidance]\ndino = "local-dir:./dino"\n')
    with pytest.raises(MissingWeightsError, match="holds no config.json \\+ safetensors weights"):
        Guidance(load_preset(str(preset)), "cpu").dino()


# --------------------------------------------------------------------------- the app: files, presets, uploads


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app launched in-process with the launch options of ``app.main`` (captured, not guessed)."""
    import gradio as gr

    import app

    captured = {}
    real_launch = gr.Blocks.launch

    def record(self, **kwargs):
        captured.update(kwargs, demo=self)

    gr.Blocks.launch = record
    try:
        argv, sys.argv = sys.argv, ["app.py"]
        app.main()
    finally:
        sys.argv = argv
        gr.Blocks.launch = real_launch
    demo = captured.pop("demo")  # the app's own demo, queued by main()
    options = {k: v for k, v in captured.items() if k not in ("server_name", "server_port", "share")}
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **options)
    yield url, captured
    demo.close()


def _call(url: str, endpoint: str, data: list) -> dict:
    """Call an endpoint over HTTP like any client; returns the final server-sent event as a dict."""
    import httpx

    event_id = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=60).json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=300) as stream:
        lines = [line for line in stream.iter_lines() if line]
    kind = [line for line in lines if line.startswith("event: ")][-1].removeprefix("event: ")
    return {"event": kind, "data": json.loads(lines[-1].removeprefix("data: "))}


def _upload(url: str, data: bytes, name: str = "photo.png"):
    import httpx

    return httpx.post(f"{url}gradio_api/upload", files={"files": (name, data)}, timeout=60)


def _edit_args(image: dict, preset: str = "tiny") -> list:
    return [image, "a comic drawing", preset, 1.0, 2, 1.0, 0, ["sdedit"], "released", 10, 0]


def _photo_bytes() -> bytes:
    return (ROOT / "assets" / "examples" / "chelsea.jpg").read_bytes()


def test_uploaded_files_work_and_outputs_are_served(server):
    """The positive control of the refusals below: an uploaded photo is edited and its output served."""
    import httpx

    url, _ = server
    path = _upload(url, _photo_bytes(), "chelsea.jpg").json()[0]
    reply = _call(url, "edit", _edit_args({"path": path, "meta": {"_type": "gradio.FileData"}}))
    assert reply["event"] == "complete"
    gallery, _, files, _ = reply["data"]
    assert [item["caption"] for item in gallery] == ["Source", "SDEdit"]
    served = httpx.get(files[0]["url"], timeout=60)
    assert served.status_code == 200
    import app  # the file the app wrote, in its own output folder, is not served itself: only gradio's copy is

    originals = [p for p in app.output_root().glob("run-*/sdedit.png") if p.read_bytes() == served.content]
    assert originals and all(httpx.get(f"{url}gradio_api/file={p}", timeout=60).status_code in (403, 404)
                             for p in originals)


@pytest.mark.parametrize("target", ["app.py", "presets/tiny.toml", "assets/examples/chelsea.jpg", "/etc/hostname",
                                    "../../../../etc/hostname"])
def test_the_file_route_serves_no_arbitrary_files(server, target):
    import httpx

    url, _ = server
    path = target if target.startswith(("/", "..")) else str(ROOT / target)
    assert httpx.get(f"{url}gradio_api/file={path}", timeout=60).status_code in (403, 404)


@pytest.mark.parametrize("path", ["assets/examples/chelsea.jpg", "/etc/hostname", "../../../etc/hostname"])
def test_uploaded_paths_are_not_trusted(server, path):
    """A client naming a server file instead of uploading it gets an error, not that file processed."""
    url, _ = server
    path = str(ROOT / path) if path.startswith("assets") else path
    reply = _call(url, "edit", _edit_args({"path": path, "meta": {"_type": "gradio.FileData"}}))
    assert reply["event"] == "error"


@pytest.mark.parametrize(("endpoint", "preset"), [("edit", str(ROOT / "presets" / "tiny.toml")),
                                                  ("edit", "../presets/tiny"), ("edit", "presets/sd15.toml"),
                                                  ("translate", str(ROOT / "presets" / "tiny-dit.toml"))])
def test_the_app_refuses_preset_paths(server, endpoint, preset):
    """Presets come from the dropdown's names only, never a path (a CLI user may give one by design)."""
    url, _ = server
    path = _upload(url, _photo_bytes(), "chelsea.jpg").json()[0]
    image = {"path": path, "meta": {"_type": "gradio.FileData"}}
    args = _edit_args(image, preset) if endpoint == "edit" else [image, preset, 2, 2.0, 0]
    reply = _call(url, endpoint, args)
    assert reply["event"] == "error" and "is not in the list of choices" in reply["data"]["error"]


def test_uploads_are_size_limited(server):
    url, captured = server
    assert captured["max_file_size"] == "20mb"
    too_big = _upload(url, b"\x89PNG\r\n\x1a\n" + bytes(20 * 1024 * 1024))
    assert too_big.status_code == 413 and "maximum allowed size" in too_big.text
    assert _upload(url, _photo_bytes()).status_code == 200


# --------------------------------------------------------------------------- network and tokens

GUARD = textwrap.dedent("""
    import json, os, runpy, socket, sys

    attempts = []
    LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")

    def _host(address):
        return str(address[0] if isinstance(address, tuple) else address)

    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _host(address).startswith(LOOPBACK):
            attempts.append(_host(address))
            raise OSError("network disabled by the test")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not str(host).startswith(LOOPBACK):
            attempts.append(str(host))
            raise socket.gaierror("name resolution disabled by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    try:
        if sys.argv[1] == "-m":  # python -c GUARD -m ARGS...: the CLI, as `python -m dit_translate ARGS...`
            sys.argv = ["dit_translate", *sys.argv[2:]]
            runpy.run_module("dit_translate", run_name="__main__")
        else:
            exec(sys.argv[1])
    finally:
        with open(os.environ["ATTEMPTS_FILE"], "w") as fh:
            json.dump(attempts, fh)
""")


def _guarded(tmp_path: Path, args: list[str], **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run Python code (or ``-m dit_translate ...``) with every non-loopback connection refused and recorded.

    The environment is a user's: not offline, no analytics setting, HF_TOKEN set."""
    attempts = tmp_path / "attempts.json"
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "GRADIO_ANALYTICS_ENABLED")}
    proc = subprocess.run([sys.executable, "-c", GUARD, *args], capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**base, "HF_TOKEN": TOKEN, "ATTEMPTS_FILE": str(attempts), "OMP_NUM_THREADS": "1",
                               "TMPDIR": str(tmp_path), **env})
    return proc, json.loads(attempts.read_text())


APP_SESSION = textwrap.dedent("""
    import os, json
    from PIL import Image
    import app
    from dit_translate import api
    demo = app.build_demo()
    report = {"env": os.environ.get("GRADIO_ANALYTICS_ENABLED"), "analytics": demo.analytics_enabled}
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    photo = Image.open("assets/examples/chelsea.jpg")
    report["edit"] = api.edit(api.EditRequest("correct", "a comic drawing", steps=2), photo).nfe
    report["guide"] = api.guide(api.GuideRequest(text="a comic drawing", steps=8), photo).nfe
    demo.close()
    print(json.dumps(report))
""")


def test_no_analytics_and_no_outbound_calls_on_the_tiny_preset(tmp_path):
    """Online-capable environment (no HF_HUB_OFFLINE): importing and launching the app and running the
    editing and AGG methods on the tiny preset open no connection beyond loopback."""
    proc, attempts = _guarded(tmp_path, [APP_SESSION])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["env"] == "False" and report["analytics"] is False
    assert report["edit"] > 0 and report["guide"] > 0
    assert attempts == []
    assert TOKEN not in proc.stdout + proc.stderr


def test_a_real_preset_only_calls_the_hub_and_never_logs_the_token(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(_photo_bytes())
    proc, attempts = _guarded(tmp_path, ["-m", "edit", "--method", "sdedit", "--image", str(photo), "--prompt", "x",
                                         "--preset", "sd15", "--out", str(tmp_path / "o.png")],
                              HF_HUB_VERBOSITY="debug", HF_HUB_CACHE=str(tmp_path / "hub"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: preset 'sd15': could not download")
    assert attempts and all(host.endswith(("huggingface.co", "hf.co")) for host in attempts), attempts
    assert TOKEN not in proc.stdout + proc.stderr


def test_the_token_is_not_logged_in_process(monkeypatch, caplog, capsys, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    photo = tmp_path / "p.jpg"
    photo.write_bytes(_photo_bytes())
    with caplog.at_level(logging.DEBUG):
        assert main(["presets"]) == 0
        assert main(["edit", "--method", "sdedit", "--image", str(photo), "--prompt", "x", "--preset", "sd15",
                     "--out", str(tmp_path / "o.png")]) == 2
    out = capsys.readouterr()
    assert "HF_HUB_OFFLINE=1 forbids downloading" in out.err
    assert TOKEN not in out.out + out.err + caplog.text
