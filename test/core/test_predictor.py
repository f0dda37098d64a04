import pytest
import torch

from dexwm_ros.core.predictor import PREDICTOR_PRESETS, CDiTPredictor, PredictorConfig

P, DL = 20, 48  # small token grid and latent width for fast tests


def make_model(seed=0, **overrides) -> CDiTPredictor:
    torch.manual_seed(seed)
    cfg = PredictorConfig.from_preset("tiny", latent_dim=DL, num_patches=P, **overrides)
    model = CDiTPredictor(cfg)
    for layer in model.zero_initialized_layers():  # make every path matter
        torch.nn.init.normal_(layer.weight, std=0.05)
    return model.eval()


@pytest.mark.parametrize("name,millions", [("S", 31), ("B", 104), ("L", 344), ("XL", 456)])
def test_preset_sizes_match_paper_table5(name, millions):
    with torch.device("meta"):
        model = CDiTPredictor(PredictorConfig.from_preset(name))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - millions) / millions < 0.03, params
    cfg = model.config
    assert (cfg.depth, cfg.dim, cfg.heads) == tuple(PREDICTOR_PRESETS[name][k]
                                                   for k in ("depth", "dim", "heads"))


@pytest.mark.parametrize("name", sorted(PREDICTOR_PRESETS))
def test_forward_shapes_every_preset(name):
    with torch.device("meta"):
        model = CDiTPredictor(PredictorConfig.from_preset(name))
        out = model(torch.empty(2, 3, 448, 1024), torch.empty(2, 3, 132))
    assert out.shape == (2, 3, 448, 1024)


def test_forward_rollout_and_scoring_shapes():
    model = make_model()
    assert model(torch.randn(2, 9, P, DL), torch.randn(2, 9, 132)).shape == (2, 9, P, DL)
    out = model.rollout(torch.randn(2, 3, P, DL), torch.randn(2, 2, 132), torch.randn(2, 4, 132))
    assert out.shape == (2, 4, P, DL)
    scores = model.score_candidates(torch.randn(3, P, DL), torch.randn(2, 132),
                                    torch.randn(5, 2, 132))
    assert scores.shape == (5, 2, P, DL)


def test_zero_init_predicts_zeros_and_same_width_has_no_projection():
    cfg = PredictorConfig.from_preset("tiny", latent_dim=64, num_patches=P)
    model = CDiTPredictor(cfg)
    assert isinstance(model.input_proj, torch.nn.Identity)
    out = model(torch.randn(1, 2, P, 64), torch.randn(1, 2, 132))
    assert torch.count_nonzero(out) == 0


def test_gradient_reaches_every_parameter():
    model = make_model().train()
    latents, actions = torch.randn(2, 9, P, DL), torch.randn(2, 9, 132)
    loss = (model(latents, actions) - torch.randn(2, 9, P, DL)).square().mean()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_block_causality():
    model = make_model()
    latents, actions = torch.randn(1, 6, P, DL), torch.randn(1, 6, 132)
    base = model(latents, actions)
    for frame in range(6):
        changed_latents = latents.clone()
        changed_latents[:, frame] += 1.0
        out = model(changed_latents, actions)
        torch.testing.assert_close(out[:, :frame], base[:, :frame], rtol=0, atol=1e-6)
        assert (out[:, frame:] - base[:, frame:]).abs().amax(dim=(0, 2, 3)).min() > 1e-4
        changed_actions = actions.clone()
        changed_actions[:, frame] += 1.0
        out = model(latents, changed_actions)
        torch.testing.assert_close(out[:, :frame], base[:, :frame], rtol=0, atol=1e-6)
        assert (out[:, frame] - base[:, frame]).abs().max() > 1e-4


def test_rollout_first_step_is_teacher_forced_prediction():
    model = make_model()
    ctx, ctx_act, fut = torch.randn(2, 3, P, DL), torch.randn(2, 2, 132), torch.randn(2, 1, 132)
    expected = model(ctx, torch.cat([ctx_act, fut], dim=1))[:, -1]
    torch.testing.assert_close(model.rollout(ctx, ctx_act, fut)[:, 0], expected)


@pytest.mark.parametrize("num_ctx,horizon,chunk", [(4, 3, None), (4, 3, 2), (1, 1, 3),
                                                   (1, 4, 5), (3, 1, 1), (9, 1, 4),
                                                   (8, 3, 2)])
def test_score_candidates_equals_rollout(num_ctx, horizon, chunk):
    model = make_model()
    model.set_action_normalization(torch.randn(132) * 0.1, torch.rand(132) + 0.5)
    ctx, ctx_act = torch.randn(num_ctx, P, DL), torch.randn(num_ctx - 1, 132)
    cand = torch.randn(5, horizon, 132)
    with torch.inference_mode():
        fast = model.score_candidates(ctx, ctx_act, cand, chunk_size=chunk)
        plain = model.rollout(ctx.expand(5, -1, -1, -1), ctx_act.expand(5, -1, -1), cand)
    assert fast.shape == (5, horizon, P, DL)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_cpu_inference_kernels_equal_the_training_kernels():
    """fp32 planning on CPU runs attention and GELU through in-place kernels; they predict
    what the kernels used with autograd predict."""
    model = make_model()
    model.set_action_normalization(torch.randn(132) * 0.1, torch.rand(132) + 0.5)
    ctx, act = torch.randn(2, 4, P, DL), torch.randn(2, 4, 132)
    with torch.inference_mode():
        planned = model(ctx, act)
    trained = model(ctx, act)
    assert trained.requires_grad
    torch.testing.assert_close(planned, trained.detach(), rtol=1e-5, atol=1e-5)


def test_bf16_weights_and_autocast_stay_close_to_fp32():
    model = make_model()
    ctx, ctx_act, cand = torch.randn(4, P, DL), torch.randn(3, 132), torch.randn(3, 3, 132)
    with torch.inference_mode():
        ref = model.score_candidates(ctx, ctx_act, cand)
        auto = model.score_candidates(ctx, ctx_act, cand, autocast=torch.bfloat16)
        half = model.to(torch.bfloat16).score_candidates(ctx, ctx_act, cand)
    assert auto.dtype == half.dtype == torch.float32
    scale = ref.abs().mean()
    assert (auto - ref).abs().mean() < 0.05 * scale
    assert (half - ref).abs().mean() < 0.05 * scale


def test_action_normalization_equals_prenormalized_actions():
    model = make_model()
    mean, std = torch.randn(132), torch.rand(132) + 0.5
    latents, actions = torch.randn(1, 3, P, DL), torch.randn(1, 3, 132)
    plain = model(latents, (actions - mean) / std)
    model.set_action_normalization(mean, std)
    torch.testing.assert_close(model(latents, actions), plain)
    with pytest.raises(ValueError, match="std"):
        model.set_action_normalization(mean, torch.zeros(132))
    with pytest.raises(ValueError, match="shape"):
        model.set_action_normalization(mean[:5], std)


def test_config_round_trip_and_errors():
    cfg = PredictorConfig.from_preset("S", latent_dim=768)
    assert PredictorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown predictor preset"):
        PredictorConfig.from_preset("M")
    data = cfg.to_dict()
    del data["depth"]
    with pytest.raises(ValueError, match="depth"):
        PredictorConfig.from_dict(data)
    with pytest.raises(ValueError, match="bogus"):
        PredictorConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        PredictorConfig.from_preset("tiny", heads=3)


def test_bad_inputs_are_named():
    model = make_model()
    with pytest.raises(ValueError, match="latents"):
        model(torch.randn(1, 2, P + 1, DL), torch.randn(1, 2, 132))
    with pytest.raises(ValueError, match="actions"):
        model(torch.randn(1, 2, P, DL), torch.randn(1, 3, 132))
    with pytest.raises(ValueError, match="sequence length"):
        model(torch.randn(1, 10, P, DL), torch.randn(1, 10, 132))
    with pytest.raises(ValueError, match="context_actions"):
        model.score_candidates(torch.randn(3, P, DL), torch.randn(3, 132), torch.randn(2, 1, 132))
    with pytest.raises(ValueError, match="chunk_size"):
        model.score_candidates(torch.randn(3, P, DL), torch.randn(2, 132), torch.randn(2, 1, 132),
                               chunk_size=0)
