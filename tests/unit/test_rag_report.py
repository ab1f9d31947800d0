"""The RAG suite's report: table rows per split, seed averages, the noise curve, experiment `suites` validation."""
import pytest

from megatron_retro.evaluation.rag_report import average_suites, noise_curve, suite_table, write_suite_report

RUN = {"noise-0": {"em": 0.5, "faithful": 1.0, "count": 4, "noise_ratio": 0.0, "context_recall": 1.0},
       "noise-1": {"em": 0.25, "faithful": 0.5, "count": 4, "noise_ratio": 0.5, "context_recall": 1.0},
       "negative": {"em": 0.0, "refused": 0.0, "count": 4, "noise_ratio": None, "context_recall": None}}


def test_table_curve_and_seed_average(tmp_path):
    table = suite_table({"gpt lora": RUN})
    assert "| gpt lora | noise-1 | 4 | 25.0 |" in table and "| gpt lora | negative | 4 | 0.0 |" in table
    assert table.splitlines()[3].count("–") >= 5                  # undefined metrics are shown as such
    assert noise_curve(RUN, "em") == [(0.0, 0.5), (0.5, 0.25)]
    other = {k: dict(v, em=v["em"] + 0.5) for k, v in RUN.items()}
    avg = average_suites([RUN, other])
    assert avg["noise-1"]["em"] == pytest.approx(0.5) and avg["noise-1"]["count"] == 8
    assert "context_recall" not in avg["negative"]               # None in every run: stays undefined
    paths = write_suite_report([{"arch": "gpt", "method": "lora", "rag": RUN},
                                {"arch": "gpt", "method": "lora", "rag": other},
                                {"arch": "retro", "method": "lora", "rag": RUN},
                                {"arch": "retro", "method": "zero-shot"}], str(tmp_path))
    text = open(paths[0]).read()
    assert "| gpt lora (2 seeds) | noise-1 | 8 | 50.0 |" in text and "| retro lora (1 seed) |" in text
    assert "zero-shot" not in text and (tmp_path / "rag_noise.png").stat().st_size > 1000


def test_experiment_suites_are_validated():
    from megatron_retro.config import ConfigError
    from megatron_retro.evaluation.experiment_config import ExperimentConfig

    assert ExperimentConfig(suites=["rag"]).suites == ["rag"]
    with pytest.raises(ConfigError, match="suites: 'ragas' is not one of rag"):
        ExperimentConfig(suites=["ragas"])
    with pytest.raises(ConfigError, match="suite_examples=0"):
        ExperimentConfig(suite_examples=0)


def test_report_rows_are_grid_models_not_architectures(tmp_path):
    # a Gemma 3 and a GPT-tiny are both arch "gpt": each keeps its own rows, averaged over its own seeds
    records = [{"model": "gpt-tiny", "arch": "gpt", "method": "lora", "rag": RUN},
               {"model": "gemma3-270m", "arch": "gpt", "method": "lora", "rag": RUN},
               {"model": "gemma3-270m", "arch": "gpt", "method": "lora",
                "rag": {k: dict(v, em=1.0) for k, v in RUN.items()}},
               {"model": "retro-tiny", "arch": "retro", "method": "lora", "rag": RUN}]
    text = open(write_suite_report(records, str(tmp_path))[0]).read()
    assert "| gpt-tiny lora (1 seed) | noise-1 | 4 | 25.0 |" in text
    assert "| gemma3-270m lora (2 seeds) | noise-1 | 8 | 62.5 |" in text
    assert "| retro-tiny lora (1 seed) |" in text and "| gpt lora" not in text
