"""The low-rank projector component, the GaLore/Fira construction checks and the group helper."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import steepest
from steepest.optim._projectors import LEFT_KEY, RIGHT_KEY, LowRankProjector


def _state(projector: LowRankProjector, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s, dtype=torch.float64) for k, s in projector.basis_shapes(shape).items()}


@pytest.mark.parametrize(
    ("proj_type", "shape", "keys", "projected"),
    [
        ("std", (6, 4), {RIGHT_KEY}, (6, 2)),
        ("std", (4, 6), {LEFT_KEY}, (2, 6)),
        ("reverse_std", (6, 4), {LEFT_KEY}, (2, 4)),
        ("reverse_std", (4, 6), {RIGHT_KEY}, (4, 2)),
        ("left", (6, 4), {LEFT_KEY}, (2, 4)),
        ("right", (4, 6), {RIGHT_KEY}, (4, 2)),
        ("full", (6, 4), {LEFT_KEY, RIGHT_KEY}, (2, 2)),
    ],
)
@pytest.mark.parametrize("method", ["svd", "random"])
def test_sides_shapes_and_orthonormal_bases(
    proj_type: str, shape: tuple[int, int], keys: set[str], projected: tuple[int, int], method: str
) -> None:
    projector = LowRankProjector(rank=2, proj_type=proj_type, method=method, update_proj_gap=3)
    assert set(projector.basis_shapes(shape)) == keys
    assert projector.projected_shape(shape) == projected
    state = _state(projector, shape)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low = projector.project(grad, state, step=0)
    assert low.shape == projected
    eye = torch.eye(2, dtype=torch.float64)
    if LEFT_KEY in state:
        torch.testing.assert_close(state[LEFT_KEY].T @ state[LEFT_KEY], eye)
    if RIGHT_KEY in state:
        torch.testing.assert_close(state[RIGHT_KEY] @ state[RIGHT_KEY].T, eye)
    back = projector.project_back(low, state)
    assert back.shape == shape
    # Projecting the back-projection again returns the same low-rank coordinates (P P^T P = P).
    torch.testing.assert_close(projector.project(back, state, step=1), low)


def test_svd_basis_captures_the_top_singular_subspace() -> None:
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    projector = LowRankProjector(rank=2, proj_type="std", scale=0.5)
    state = _state(projector, (8, 5))
    back = projector.project_back(projector.project(grad, state, step=0), state)
    u, s, vh = torch.linalg.svd(grad, full_matrices=False)
    best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
    torch.testing.assert_close(back, 0.5 * best)


def test_refresh_every_gap_steps_from_the_current_gradient() -> None:
    projector = LowRankProjector(rank=1, proj_type="right", update_proj_gap=3)
    state = _state(projector, (4, 3))
    first = torch.zeros(4, 3, dtype=torch.float64)
    first[:, 0] = 1.0
    second = torch.zeros(4, 3, dtype=torch.float64)
    second[:, 2] = 1.0
    projector.project(first, state, step=0)
    basis = state[RIGHT_KEY].clone()
    torch.testing.assert_close(basis.abs(), torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    for step in (1, 2):  # not a refresh step: the basis stays
        projector.project(second, state, step=step)
        assert torch.equal(state[RIGHT_KEY], basis)
    projector.project(second, state, step=3)
    torch.testing.assert_close(state[RIGHT_KEY].abs(), torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64))


def test_random_basis_is_seeded_and_changes_per_refresh() -> None:
    grad = torch.ones(6, 4, dtype=torch.float64)
    bases = []
    for seed, step in ((0, 0), (0, 0), (1, 0), (0, 4)):
        projector = LowRankProjector(rank=2, method="random", seed=seed, update_proj_gap=4)
        state = _state(projector, (6, 4))
        projector.project(grad, state, step=step)
        bases.append(state[RIGHT_KEY])
    assert torch.equal(bases[0], bases[1])
    assert not torch.equal(bases[0], bases[2])
    assert not torch.equal(bases[0], bases[3])


def test_projector_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="rank"):
        LowRankProjector(rank=0)
    with pytest.raises(ValueError, match="proj_type"):
        LowRankProjector(rank=1, proj_type="diag")
    with pytest.raises(ValueError, match="method"):
        LowRankProjector(rank=1, method="qr")
    with pytest.raises(ValueError, match="update_proj_gap"):
        LowRankProjector(rank=1, update_proj_gap=0)


def test_nan_gradient_gives_nan_basis_not_an_error() -> None:
    projector = LowRankProjector(rank=1)
    state = _state(projector, (3, 2))
    grad = torch.ones(3, 2, dtype=torch.float64)
    grad[0, 0] = float("nan")
    projector.project(grad, state, step=0)
    assert torch.isnan(state[RIGHT_KEY]).all()


# -- construction checks of the optimizers --------------------------------------------


@pytest.mark.parametrize("cls", [steepest.GaLoreAdamW, steepest.Fira])
def test_projected_group_needs_matrices_smaller_than_rank(cls: type) -> None:
    w, b = torch.nn.Parameter(torch.zeros(5, 4)), torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match="2-D"):
        cls([{"params": [w, b], "rank": 2}])
    for rank in (4, 5):
        with pytest.raises(ValueError, match=r"rank=.*min"):
            cls([{"params": [w], "rank": rank}])
    with pytest.raises(ValueError, match="proj_type"):
        cls([{"params": [w], "rank": 2, "proj_type": "diagonal"}])
    with pytest.warns(UserWarning, match="no param group is projected"):
        opt = cls([{"params": [b]}])
    with pytest.raises(ValueError, match="rank"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3, 3))], "rank": 3})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": w, "rank": 3})  # a single tensor is accepted, as torch does
    assert opt.param_groups[1]["rank"] == 3 and opt.param_groups[1]["update_proj_gap"] == 200


def test_fira_refuses_full_and_the_official_alpha_key() -> None:
    w = torch.nn.Parameter(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="proj_type"):
        steepest.Fira([{"params": [w], "rank": 2, "proj_type": "full"}])
    with pytest.raises(ValueError, match="scale"):
        steepest.Fira([{"params": [w], "rank": 2, "alpha": 0.25}])


@pytest.mark.parametrize("cls", [steepest.GaLoreAdamW, steepest.Fira])
def test_state_is_tensors_and_round_trips_through_torch_save(cls: type) -> None:
    model = torch.nn.ModuleDict({"attn": torch.nn.Linear(6, 8), "mlp": torch.nn.Linear(8, 3)})
    opt = cls(steepest.lowrank_param_groups(model, rank=2, update_proj_gap=2), lr=1e-2)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))

    def train(m: torch.nn.ModuleDict, o: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            o.zero_grad()
            m["mlp"](torch.tanh(m["attn"](x))).square().sum().backward()
            o.step()

    train(model, opt, 3)
    assert all(isinstance(v, torch.Tensor) for s in opt.state.values() for v in s.values())
    assert opt.state[model["attn"].weight][RIGHT_KEY].shape == (2, 6)  # 8 x 6: std projects the right
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    model_copy = copy.deepcopy(model)
    resumed = cls(steepest.lowrank_param_groups(model_copy, rank=2, update_proj_gap=2), lr=1e-2)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    train(model, opt, 3)
    train(model_copy, resumed, 3)
    for a, b in zip(model.parameters(), model_copy.parameters(), strict=True):
        assert torch.equal(a, b)


# -- lowrank_param_groups ---------------------------------------------------------------


def test_lowrank_param_groups_selects_target_linear_weights() -> None:
    model = torch.nn.ModuleDict(
        {
            "embed": torch.nn.Embedding(10, 8),
            "self_attn": torch.nn.Linear(8, 8),
            "mlp": torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16)),
            "lm_head": torch.nn.Linear(16, 10),
        }
    )
    groups = steepest.lowrank_param_groups(model, rank=4, update_proj_gap=50, scale=0.25, proj_type="reverse_std")
    plain, projected = groups
    assert set(plain) == {"params"}
    assert projected == {
        "params": [model["self_attn"].weight, model["mlp"][0].weight],
        "rank": 4,
        "update_proj_gap": 50,
        "scale": 0.25,
        "proj_type": "reverse_std",
    }
    assert len(plain["params"]) + 2 == len(list(model.parameters()))
    assert not any(p is model["self_attn"].weight for p in plain["params"])
    only_plain = steepest.lowrank_param_groups(model, rank=4, target_modules=("nothing",))
    assert len(only_plain) == 1 and "rank" not in only_plain[0]
    steepest.GaLoreAdamW(groups)
