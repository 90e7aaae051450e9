"""The denoiser and its context blocks: layout, shapes, conventions, ablations, modes."""
import math

import pytest
import torch
from model_fixtures import TINY_CHANNELS, single_thread, tiny_denoiser, tiny_inputs  # noqa: F401

from common.core.skeleton import NUM_JOINTS
from common.model.context import DeformableContextBlock, DropPath, sample_features
from common.model.denoiser import CONTEXT_PREFIXES, SinusoidalTimeEmbedding, SnapPoseDenoiser

pytestmark = pytest.mark.usefixtures("single_thread")


def test_state_dict_matches_released_layout(spec_keys):
    ours = {name: tuple(t.shape) for name, t in SnapPoseDenoiser().state_dict().items()}
    assert ours == dict(spec_keys("denoiser"))


def test_output_shapes_and_hypotheses_are_independent():
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noisy, features, t = tiny_inputs()
    with torch.no_grad():
        eps5 = denoiser(keypoints_2d, ref, noisy, features, t)
        eps4 = [denoiser(keypoints_2d, ref, noisy[:, h], features, t) for h in range(noisy.shape[1])]
    assert eps5.shape == noisy.shape
    assert eps4[0].shape == noisy[:, 0].shape
    # Each hypothesis is denoised on its own: the 5-D call equals one 4-D call per hypothesis.
    torch.testing.assert_close(eps5, torch.stack(eps4, dim=1), rtol=1e-5, atol=1e-6)


def test_forward_is_denoise_of_encoded_context():
    denoiser = tiny_denoiser().eval()
    keypoints_2d, ref, noisy, features, t = tiny_inputs()
    with torch.no_grad():
        context = denoiser.encode_context(keypoints_2d, ref, features)
        assert context.shape == (2, 5, NUM_JOINTS, 16)
        torch.testing.assert_close(denoiser.denoise(context, noisy, t), denoiser(keypoints_2d, ref, noisy, features, t))


def test_bad_shapes_are_explained():
    denoiser = tiny_denoiser()
    keypoints_2d, ref, noisy, features, t = tiny_inputs()
    with pytest.raises(ValueError, match="keypoints_2d"):
        denoiser(keypoints_2d[:, 0], ref, noisy, features, t)
    with pytest.raises(ValueError, match="feature maps"):
        denoiser(keypoints_2d, ref, noisy, features[:3], t)
    with pytest.raises(ValueError, match="noisy_3d"):
        denoiser(keypoints_2d, ref, noisy[..., :2], features, t)
    with pytest.raises(ValueError, match="timesteps"):
        denoiser(keypoints_2d, ref, noisy, features, t[:1])


def test_sampling_convention_align_corners_and_padding():
    # A map whose channels are its own x and y coordinates returns the sample points themselves.
    h, w = 7, 5
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    ramp = torch.stack([xs, ys])[None]  # (1, 2, h, w)
    inside = torch.tensor([[[[-1.0, -1.0], [0.3, -0.7], [1.0, 1.0]]]])  # (1, 1, 3, 2)
    torch.testing.assert_close(sample_features(ramp, inside, "zeros")[0, 0], inside[0, 0], atol=1e-6, rtol=0)
    outside = torch.tensor([[[[1.5, 0.0], [-3.0, 2.0]]]])
    torch.testing.assert_close(sample_features(ramp, outside, "border")[0, 0], outside[0, 0].clamp(-1, 1))
    assert sample_features(ramp, torch.tensor([[[[3.5, 0.0]]]]), "zeros").abs().max() == 0


def test_fresh_context_block_initialisation():
    block = DeformableContextBlock(16, TINY_CHANNELS)
    assert block.sampling_offsets.weight.abs().max() == 0
    assert block.attention_weights.weight.abs().max() == 0 and block.attention_weights.bias.abs().max() == 0
    bias = block.sampling_offsets.bias.view(4, 4, 2)  # (heads, samples, xy)
    for s in range(4):
        torch.testing.assert_close(bias[:, s], bias[:, 0] * (s + 1))
    # Head h points at angle 2*pi*h/4, its largest coordinate 0.01 for the first sample.
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) * 0.01
    torch.testing.assert_close(bias[:, 0], expected, atol=1e-8, rtol=0)


def test_context_block_with_zero_offsets_reads_the_joint():
    # Zero offsets and uniform weights: every head's value is embed_proj(feature at the joint).
    block = DeformableContextBlock(16, TINY_CHANNELS).eval()
    with torch.no_grad():
        block.sampling_offsets.bias.zero_()
        block.mlp.fc2.weight.zero_()
        block.mlp.fc2.bias.zero_()
    keypoints_2d, ref, _, features, _ = tiny_inputs()
    tokens = torch.randn(2, 5, NUM_JOINTS, 16)
    with torch.no_grad():
        out = block(tokens, ref, features)
        torch.testing.assert_close(out[:, 0], tokens[:, 0])
        for level in range(4):
            at_joint = block.embed_proj[level](sample_features(features[level], ref[:, :, None], "border")[:, :, 0])
            torch.testing.assert_close(out[:, level + 1] - tokens[:, level + 1], at_joint.repeat(1, 1, 4))


def test_time_embedding_known_values():
    emb = SinusoidalTimeEmbedding(128)(torch.tensor([0, 1, 50]))
    assert emb.shape == (3, 128)
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(64), torch.ones(64)]))
    # Frequencies run from 1 down to 1e-4 (= exp(-ln(10000) * 63 / 63)).
    assert emb[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert emb[1, 63].item() == pytest.approx(math.sin(1e-4), abs=1e-9)
    assert emb[2, 64].item() == pytest.approx(math.cos(50.0), abs=1e-5)
    assert emb[2, 127].item() == pytest.approx(math.cos(50e-4), abs=1e-6)


def test_ablation_switches():
    torch.manual_seed(1)
    plain = tiny_denoiser().eval()
    keypoints_2d, ref, _, features, _ = tiny_inputs()
    with torch.no_grad():
        reference = plain.encode_context(keypoints_2d, ref, features)
        variants = {}
        for switch in ("mask_pose", "mask_context", "shuffle_context"):
            model = tiny_denoiser(**{switch: True}).eval()
            model.load_state_dict(plain.state_dict())
            torch.manual_seed(3)  # a permutation that moves at least one level (checked below)
            variants[switch] = model.encode_context(keypoints_2d, ref, features)
    assert variants["mask_pose"][:, 0].abs().max() == 0
    torch.testing.assert_close(variants["mask_pose"][:, 1:], reference[:, 1:])
    assert variants["mask_context"][:, 1:].abs().max() == 0
    torch.testing.assert_close(variants["mask_context"][:, 0], reference[:, 0])
    shuffled = variants["shuffle_context"]
    torch.testing.assert_close(shuffled[:, 0], reference[:, 0])
    order = [next(j for j in range(1, 5) if torch.equal(shuffled[:, i], reference[:, j])) for i in range(1, 5)]
    assert sorted(order) == [1, 2, 3, 4] and order != [1, 2, 3, 4]


def test_train_mode_is_stochastic_and_eval_mode_deterministic():
    keypoints_2d, ref, noisy, features, t = tiny_inputs()
    denoiser = tiny_denoiser(drop_path_rate=0.5)
    rates = [b.drop_path.rate for b in denoiser.res_blocks]
    assert rates == [0.0, 0.5]
    with torch.no_grad():
        denoiser.eval()
        first = denoiser(keypoints_2d, ref, noisy, features, t)
        torch.testing.assert_close(denoiser(keypoints_2d, ref, noisy, features, t), first, rtol=0, atol=0)
        denoiser.train()
        trained = [denoiser(keypoints_2d, ref, noisy, features, t) for _ in range(4)]
    assert any(not torch.allclose(x, first) for x in trained)

    no_drop = tiny_denoiser(drop_path_rate=0.0)
    no_drop.load_state_dict(denoiser.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(no_drop.train()(keypoints_2d, ref, noisy, features, t), first)


def test_drop_path_keeps_the_expectation():
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    out = drop(torch.ones(20000, 3))
    values = out[:, 0].unique()
    torch.testing.assert_close(values, torch.tensor([0.0, 1 / 0.75]))
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(drop.eval()(torch.ones(5, 3)), torch.ones(5, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(1.0)


def test_freeze_context_leaves_only_the_rest_trainable():
    denoiser = tiny_denoiser(drop_path_rate=0.0)
    context_ids = {id(p) for p in denoiser.context_parameters()}
    named = dict(denoiser.named_parameters())
    assert context_ids == {id(p) for n, p in named.items() if n.startswith(CONTEXT_PREFIXES)}
    assert not denoiser.context_frozen
    denoiser.freeze_context()
    assert denoiser.context_frozen
    assert {id(p) for p in denoiser.trainable_parameters()} == {id(p) for p in named.values()} - context_ids

    keypoints_2d, ref, noisy, features, t = tiny_inputs()
    denoiser(keypoints_2d, ref, noisy, features, t).square().sum().backward()
    assert all(p.grad is None for p in denoiser.context_parameters())
    assert all(p.grad is not None for p in denoiser.trainable_parameters())


def test_embed_dim_must_fit_the_heads():
    with pytest.raises(ValueError, match="multiple of 8"):
        SnapPoseDenoiser(embed_dim=20)


def test_attention_over_many_sequences_is_sliced_with_the_same_result(monkeypatch):
    """Past MAX_ATTENTION_BATCH sequences, attention runs in slices (the CUDA kernels' limit) and agrees."""
    from common.model import denoiser as denoiser_module

    torch.manual_seed(0)
    attention = denoiser_module.Attention(16, 4).eval()
    x = torch.randn(10, 6, 16)  # (sequences, tokens, width)
    with torch.no_grad():
        whole = attention(x)
        calls = []
        sdpa = denoiser_module.F.scaled_dot_product_attention
        monkeypatch.setattr(denoiser_module, "MAX_ATTENTION_BATCH", 4)
        monkeypatch.setattr(denoiser_module.F, "scaled_dot_product_attention",
                            lambda q, *rest, **kw: calls.append(q.shape[0]) or sdpa(q, *rest, **kw))
        sliced = attention(x)
    assert calls == [4, 4, 2]
    torch.testing.assert_close(sliced, whole, rtol=1e-6, atol=1e-6)
