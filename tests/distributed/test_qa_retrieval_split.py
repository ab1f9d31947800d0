"""QA retrieval under TP2 x DP2: each question is searched once in the job (each DP rank's first
TP rank searches its share; the shares are gathered), and the result equals one in-process search."""
import os

import pytest

from launch import torchrun

pytestmark = pytest.mark.distributed
WORKER = os.path.join(os.path.dirname(__file__), "worker_qa_retrieval_split.py")


def test_questions_are_split_over_dp_ranks_and_searched_once(tmp_path):
    (result,) = torchrun(WORKER, 4, str(tmp_path), timeout=300)
    assert result["dp"] == 2 and result["equal"] and result["cached_equal"]
    # 11 questions: DP rank 0 takes 5, DP rank 1 takes 6; the second TP rank of each searches none
    assert sorted(result["rows"]) == [0, 0, 5, 6]
    assert result["after_cache"] == 0
    assert result["retrieved_by"] == ["local", "local"]  # the cache keeps the mode that filled it
