"""The editing benchmark's machinery on a tiny random SD pipeline: NFE accounting, outputs, ratios."""

import json
import time

import pytest
import torch
from PIL import Image

from benchmarks.common import peak_memory
from benchmarks.editing import METHODS, benchmark_models, make_report, write_report

STEPS, STRENGTH, INVERSION = 5, 0.8, 10


@pytest.fixture(scope="module")
def setting(models, photo):
    result = benchmark_models(
        models, photo, STEPS, strength=STRENGTH, inversion_steps=INVERSION, repeats=2, name="tiny"
    )
    return {**result, "label": "random tiny SD", "untrained": True}


def test_nfe_follows_each_methods_accounting(models, setting):
    m = setting["methods"]
    assert list(m) == list(METHODS)
    run = models.steps(STEPS).tail(STRENGTH)  # 601, 401, 201, 1
    inversion = [t for t in models.steps(INVERSION).timesteps if t <= run.timesteps[0]]  # 601, 501, ..., 1
    assert len(run) == 4 and len(inversion) == 7
    assert m["sdedit"]["nfe"] == 2 * len(run) == 8
    # the released sampler's rule starts at index int(5 * (1 - 0.8)) = int(0.99999...) = 0: all 5 steps
    released_run = models.steps(STEPS).ldm_tail(STRENGTH)
    assert len(released_run) == 5
    assert m["correct-released"]["nfe"] == m["correct-full"]["nfe"] == 2 * len(released_run) + 1
    assert m["correct-trajectory"]["nfe"] == m["sdedit"]["nfe"] + len(run)
    source_passes = int(0.8 * len(run))  # PnP's ResBlock window (tau_feat 0.8) outlasts the attention one (0.5)
    assert m["pnp"]["nfe"] == len(inversion) + 2 * len(run) + source_passes == 18
    assert m["pnp"]["extras"]["inversion_steps"] == len(inversion)
    # pnp-diffusers' run: 50 steps from full inversion (on the 50-step grid here, below the 999 threshold)
    assert m["pnp-official"]["nfe"] == 50 + 2 * 50 + int(0.8 * 50) == 190
    for r in m.values():
        assert len(r["runs"]) == 2 and r["seconds"] == pytest.approx(sum(r["runs"]) / 2)  # median of two
        assert r["peak_memory_mb"] == max(r["peak_memory_runs_mb"]) >= 0


def test_report_files_and_ratios_match_the_json(setting, tmp_path):
    config = {"steps": STEPS, "strength": STRENGTH, "guidance": 7.5, "pnp_inversion_steps": INVERSION,
              "prompt": "p", "seed": 0}
    paths = write_report(make_report([setting], config, torch.device("cpu")), tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["editing.json", "editing.md", "editing.png"]
    report = json.loads(paths["json"].read_text())
    assert report["tiny_untrained"] is True and report["machine"]["torch"] == torch.__version__
    with Image.open(paths["png"]) as im:
        im.verify()
        assert im.format == "PNG" and min(im.size) > 100
    md = paths["md"].read_text()
    m = report["settings"][0]["methods"]
    pairs = [("correct-released", "sdedit"), ("correct-trajectory", "sdedit"),
             ("pnp", "correct-released"), ("pnp", "correct-trajectory"), ("pnp-official", "correct-released")]
    assert [k.split("/") for k in report["settings"][0]["ratios"]] == [list(p) for p in pairs]
    for num, den in pairs:
        r = report["settings"][0]["ratios"][f"{num}/{den}"]
        time_ratio = m[num]["seconds"] / m[den]["seconds"]
        assert r["time"] == pytest.approx(time_ratio)
        cpu_ratio = m[num]["cpu_seconds"] / m[den]["cpu_seconds"]
        assert r["cpu"] == pytest.approx(cpu_ratio)
        meets = (lambda v: v <= 1.2) if den == "sdedit" else (lambda v: v >= 10)
        assert (r["pass"], r["cpu_pass"]) == (meets(time_ratio), meets(cpu_ratio))
        verdicts = " | ".join("PASS" if ok else "FAIL" for ok in (r["pass"], r["cpu_pass"]))
        expected = f"| {time_ratio:.2f}x | {cpu_ratio:.2f}x | {m[num]['nfe'] / m[den]['nfe']:.2f}x | "
        row = next(line for line in md.splitlines() if line.endswith(f"{verdicts} |") and expected in line)
        assert row.startswith("| ")
    for r in m.values():
        assert f"| {r['seconds']:.2f} |" in md and f"| {r['cpu_seconds']:.2f} | {r['nfe']} |" in md
        assert all(c > 0 for c in r["cpu_runs"])


def test_peak_memory_sees_a_transient_allocation():
    with peak_memory(torch.device("cpu")) as peak:
        big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, held over several 10 ms samples
        time.sleep(0.1)
        del big
    assert 48 * 2**20 < peak() < 1024 * 2**20
