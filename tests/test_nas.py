"""Architecture search with distilled proxies: the space, Spearman's rho, the search command."""

from __future__ import annotations

import pytest
from test_compare import export

from lit_distill.evaluation.nas import SearchSpace, name_of, ranks, spearman, top_k_correlations
from lit_distill.main import main


def test_ranks_and_spearman_by_hand():
    assert ranks([10, 30, 20, 20]) == [1.0, 4.0, 2.5, 2.5]  # ties share their average rank
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, -1, 1): rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)


def test_top_k_correlates_the_best_architectures_on_the_real_data():
    real = [0.9, 0.8, 0.7, 0.6, 0.5]
    proxy = [0.5, 0.6, 0.7, 0.2, 0.1]  # ranks the best three backwards, the rest well
    rho = top_k_correlations(real, proxy, [3, 5, 10])
    assert rho[3] == pytest.approx(-1.0)
    assert rho[5] == pytest.approx(spearman(real, proxy)) and rho[10] == rho[5]


def test_search_space_draws_the_same_architectures_every_time():
    space = SearchSpace(size=5, seed=3)
    assert space.architectures() == SearchSpace(size=5, seed=3).architectures()
    assert len(space.architectures()) == 5 and len(SearchSpace(size=None).architectures()) == 108
    assert name_of({"width": 32, "depth": 2, "norm": "batch", "activation": "relu",
                    "pooling": "max"}) == "w32-d2-batch-relu-max"  # fmt: skip
    with pytest.raises(ValueError, match="at least 2"):
        SearchSpace(size=1)


def test_search_command_ranks_with_every_proxy_and_resumes(in_tmp, capsys):
    sets = f"[{export(in_tmp, 'tgdd')}]"
    args = ["test", "--config", "nas.yaml", f"--model.sets={sets}", "--model.space_size=3"]
    args += ["--model.epochs=2", "--model.real_epochs=1", "--model.topk=[2,3]"]
    main([*args, "--trainer.enable_progress_bar=false"])
    table = (in_tmp / "runs/nas/nas.md").read_text()
    for proxy in ("| tgdd |", "| random real (IPC 1) |", "| real data | 1.00 | 1.00 |"):
        assert proxy in table
    assert len((in_tmp / "runs/nas/nas.csv").read_text().splitlines()) == 1 + 3
    assert len(list((in_tmp / "runs/nas/cells").glob("*.json"))) == 3 * 3
    assert "Architecture search:" in capsys.readouterr().out
