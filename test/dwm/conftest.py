"""Tiny random DWM base models written once per test session (the loader's directory layout)."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run many small operations: one thread is much faster on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    from dexwm_ros.dwm.tiny import write_tiny_base

    return write_tiny_base(tmp_path_factory.mktemp("dwm") / "base", seed=0)


@pytest.fixture
def pipeline(tiny_base):
    from dexwm_ros.dwm.loading import load_pipeline

    return load_pipeline(tiny_base)


@pytest.fixture(scope="session")
def tiny_weights(tiny_base, tmp_path_factory):
    """DWM weights with non-zero LoRA and hand-channel weights (as after training)."""
    import torch

    from dexwm_ros.dwm.loading import load_pipeline
    from dexwm_ros.dwm.model import LoraSettings, add_lora, save_dwm_weights

    pipeline = load_pipeline(tiny_base)
    settings = LoraSettings(rank=4, alpha=4)
    add_lora(pipeline.transformer, settings)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in pipeline.transformer.named_parameters():
            if "lora_B" in name or name == "patch_embed.proj.weight":
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return save_dwm_weights(pipeline.transformer, tmp_path_factory.mktemp("dwm") / "weights",
                            settings, pipeline.latent_channels)
