"""Feature capture and injection: names, what the injected layers really compute, clean restore."""

import pytest
import torch

from dit_translate.diffusion.features import FeatureSet, inject_features, record_features, resolve_layer

ATTN = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"
RES = "up_blocks.1.resnets.2"


def _run(models, x, t=500, batch=1):
    ctx = models.embed("a photo").expand(batch, -1, -1)
    return models.unet(x.expand(batch, -1, -1, -1), t, encoder_hidden_states=ctx).sample


def test_layer_names_resolve_and_validate(models):
    unet = models.unet
    assert resolve_layer(unet, "attn_probs", "up_blocks.1.attentions.0") == ATTN
    assert resolve_layer(unet, "attn_qk", ATTN) == ATTN
    # LDM decoder indices: output_blocks[5] = up_blocks[1], item 2 (3 layers per up block in SD).
    assert resolve_layer(unet, "resnet", "output_blocks.5") == RES
    assert resolve_layer(unet, "attn_probs", "output_blocks.4") == "up_blocks.1.attentions.1.transformer_blocks.0.attn1"
    with pytest.raises(ValueError, match="does not exist.*valid attn_probs layers: down_blocks"):
        resolve_layer(unet, "attn_probs", "up_blocks.9.attentions.0")
    with pytest.raises(ValueError, match="cross-attention"):
        resolve_layer(unet, "attn_probs", "up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    with pytest.raises(ValueError, match="not a ResnetBlock2D"):
        resolve_layer(unet, "resnet", "up_blocks.1.attentions.0")
    with pytest.raises(ValueError, match="unknown feature kind"):
        resolve_layer(unet, "values", ATTN)
    with pytest.raises(ValueError, match="does not exist"):
        with record_features(unet, FeatureSet(resnet=("up_blocks.1.resnets.7",))):
            pass


def test_injected_layers_use_the_recorded_features(models):
    """In the injected pass, attention output = A_recorded @ V_current and the ResBlock branch = recorded."""
    unet = models.unet
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    feats = FeatureSet(attn_probs=(ATTN,), resnet=(RES,))
    modules = dict(unet.named_modules())
    attn, res = modules[ATTN], modules[RES]
    seen = {}
    with torch.no_grad():
        with record_features(unet, feats) as store:
            out_a = _run(models, xa)
        plain_b = _run(models, xb)
        hooks = [
            attn.to_v.register_forward_hook(lambda m, i, o: seen.__setitem__("v", o)),
            attn.to_out[0].register_forward_hook(lambda m, i, o: seen.__setitem__("attn_out", i[0])),
            res.register_forward_hook(lambda m, i, o: seen.__setitem__("res", (i[0], i[1], o))),
        ]
        try:
            with inject_features(unet, feats, store, lambda kind, t: 500) as log:
                out_b = _run(models, xb, batch=2)  # a CFG-sized batch receives the batch-1 record
        finally:
            for h in hooks:
                h.remove()
        # identical input + injection of its own features reproduces the recording pass
        with inject_features(unet, feats, store, lambda kind, t: 500):
            again_a = _run(models, xa)
    probs = store[("attn_probs", ATTN, 500)]
    assert probs.shape == (attn.heads, 4 * 4, 4 * 4)  # up_blocks[1] works at 1/4 of the 16x16 latent
    torch.testing.assert_close(probs.sum(-1), torch.ones(attn.heads, 16))
    v = attn.head_to_batch_dim(seen["v"])
    expected = attn.batch_to_head_dim(torch.bmm(probs.repeat(2, 1, 1), v))
    torch.testing.assert_close(seen["attn_out"], expected)
    inp, temb, out = seen["res"]
    branch = out * res.output_scale_factor - res.conv_shortcut(inp)
    torch.testing.assert_close(branch, store[("resnet", RES, 500)].expand(2, -1, -1, -1), atol=1e-5, rtol=1e-5)
    assert {(k, layer) for k, layer, _, _ in log} == {("attn_probs", ATTN), ("resnet", RES)}
    torch.testing.assert_close(out_b[0], out_b[1])
    assert (out_b[:1] - plain_b).abs().max() > 1e-3
    torch.testing.assert_close(again_a, out_a, atol=1e-5, rtol=1e-5)


def test_qk_injection_replaces_queries_and_keys(models):
    """With Q/K injected, the layer computes softmax(Q_rec K_rec^T / sqrt(d)) @ V_current."""
    unet = models.unet
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    feats = FeatureSet(attn_qk=(ATTN,))
    attn = dict(unet.named_modules())[ATTN]
    seen = {}
    with torch.no_grad():
        with record_features(unet, feats) as store:
            _run(models, xa)
        hooks = [
            attn.to_v.register_forward_hook(lambda m, i, o: seen.__setitem__("v", o)),
            attn.to_out[0].register_forward_hook(lambda m, i, o: seen.__setitem__("attn_out", i[0])),
        ]
        try:
            with inject_features(unet, feats, store, lambda kind, t: t):
                _run(models, xb)
        finally:
            for h in hooks:
                h.remove()
    q, k = store[("attn_qk", ATTN, 500)]
    probs = torch.softmax(q @ k.transpose(1, 2) * attn.scale, dim=-1)
    expected = attn.batch_to_head_dim(probs @ attn.head_to_batch_dim(seen["v"]))
    torch.testing.assert_close(seen["attn_out"], expected, atol=1e-5, rtol=1e-5)


def test_nested_contexts_on_one_layer_are_refused(models):
    feats = FeatureSet(attn_probs=(ATTN,))
    with record_features(models.unet, feats):
        with pytest.raises(ValueError, match="already"):
            with record_features(models.unet, FeatureSet(attn_qk=("up_blocks.1.attentions.0",))):
                pass


def test_selector_none_leaves_layer_alone_and_missing_record_is_an_error(models):
    unet = models.unet
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    feats = FeatureSet(attn_probs=(ATTN,), resnet=(RES,))
    with torch.no_grad():
        plain = _run(models, x)
        with inject_features(unet, feats, {}, lambda kind, t: None) as log:
            same = _run(models, x)
        assert log == []
        torch.testing.assert_close(same, plain)
        with pytest.raises(KeyError, match="no recorded resnet feature"):
            with inject_features(unet, FeatureSet(resnet=(RES,)), {}, lambda kind, t: 999):
                _run(models, x)


def test_model_restored_after_an_exception(models):
    unet = models.unet
    before = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    feats = FeatureSet(attn_probs=(ATTN,), attn_qk=("up_blocks.2.attentions.1",), resnet=(RES,))
    with pytest.raises(RuntimeError, match="boom"):
        with record_features(unet, feats):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with inject_features(unet, feats, {}, lambda k, t: None):
            raise RuntimeError("boom")
    after = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    assert after == before
    assert not unet._forward_pre_hooks
    assert all(not m._forward_hooks for m in unet.modules())


def test_sd2_style_unet_uses_the_same_layer_names():
    """SD 2.x U-Nets (linear projections, per-level head dims) resolve and record the SD 1.x names."""
    from diffusers import UNet2DConditionModel

    from dit_translate.methods.correction import DEFAULT_FEATURES
    from dit_translate.methods.pnp import DEFAULT_FEATURES as PNP

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, layers_per_block=2, block_out_channels=(16, 16, 32, 32), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=24, attention_head_dim=(2, 4, 8, 8), use_linear_projection=True,
    ).eval()
    feats = FeatureSet(
        attn_probs=DEFAULT_FEATURES.attn_probs, attn_qk=PNP.attn_qk, resnet=DEFAULT_FEATURES.resnet + PNP.resnet
    )
    with torch.no_grad(), record_features(unet, feats) as store:
        unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=torch.randn(1, 5, 24))
    assert len(store) == len(list(feats.items()))
    assert store[("resnet", "up_blocks.1.resnets.2", 10)].shape == (1, 32, 4, 4)
