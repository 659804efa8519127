from tasks.validate.splits import split_by_seed
from tests.conftest import dialogue


def test_split_is_reproducible_order_free_and_keeps_seeds_together():
    records = [dialogue(f"d{i}", [], seed_id=f"s{i % 10}") for i in range(40)]
    train, heldout = split_by_seed(records, 0.3, seed=7)
    again = split_by_seed(list(reversed(records)), 0.3, seed=7)
    assert (train, heldout) == again
    assert {r["seed_id"] for r in train}.isdisjoint({r["seed_id"] for r in heldout})
    assert len(train) + len(heldout) == 40 and heldout
    assert split_by_seed(records, 0.3, seed=8) != (train, heldout)


def test_neither_side_empty_with_two_seeds():
    records = [dialogue("a", [], seed_id="x"), dialogue("b", [], seed_id="y")]
    for fraction in (0.01, 0.99):
        train, heldout = split_by_seed(records, fraction, seed=0)
        assert len(train) == 1 and len(heldout) == 1


def test_minimum_heldout_seeds_are_taken_by_rank_and_train_is_never_emptied():
    records = [dialogue(f"d{i}", [], seed_id=f"s{i}") for i in range(20)]
    train, heldout = split_by_seed(records, 0.01, seed=3, min_heldout_seeds=6)
    assert len(heldout) == 6 and len(train) == 14
    # the minimum only adds seeds: those the fraction already held out stay held out
    _, by_fraction = split_by_seed(records, 0.2, seed=3)
    _, with_min = split_by_seed(records, 0.2, seed=3, min_heldout_seeds=6)
    assert {r["id"] for r in by_fraction} <= {r["id"] for r in with_min}
    train, heldout = split_by_seed(records[:3], 0.2, seed=3, min_heldout_seeds=8)
    assert len(train) == 1 and len(heldout) == 2
