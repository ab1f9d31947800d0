"""QA sample layouts: GPT reads the passages inline under a context budget, RETRO reads the
question in its first chunk and the passages as the neighbours of every chunk."""
import numpy as np
import pytest

from megatron_retro.data.qa_prompts import QALayout
from megatron_retro.errors import UserError

EOD, PAD = 3, 0


def passages(k=2, r=8, fill=0):
    """[k, r] passages with distinct tokens 100.., the last ``fill`` tokens of each pad."""
    out = (100 + np.arange(k * r)).reshape(k, r)
    if fill:
        out[:, -fill:] = PAD
    return out


def test_gpt_prompt_is_left_filled_passages_then_question():
    lay = QALayout("gpt", seq_length=40, answer_tokens=6, eod=EOD, pad=PAD)
    q = [10, 11, 12]
    p = lay.prompt(q, passages(fill=2))                       # 2 x 6 real passage tokens
    assert p.shape == (34,) and lay.prompt_length == 34
    body = list(range(100, 106)) + list(range(108, 114)) + q  # pads dropped, rank order kept
    assert p[-len(body):].tolist() == body
    assert (p[:-len(body)] == EOD).all()


def test_gpt_sample_loss_only_on_answer_and_eod():
    lay = QALayout("gpt", seq_length=40, answer_tokens=6, eod=EOD, pad=PAD)
    item = lay.sample([10, 11], [50, 51, 52], passages())
    P = lay.prompt_length
    assert item["tokens"].shape == item["labels"].shape == item["loss_mask"].shape == (40,)
    np.testing.assert_array_equal(item["labels"][:-1], item["tokens"][1:])
    on = np.flatnonzero(item["loss_mask"])
    assert on.tolist() == [P - 1, P, P + 1, P + 2]            # predicts 50, 51, 52, eod
    assert item["labels"][on].tolist() == [50, 51, 52, EOD]
    assert item["tokens"][P - 1] == 11                         # the prompt's last token
    np.testing.assert_array_equal(item["position_ids"], np.arange(40))


def test_gpt_context_budget_cuts_lowest_ranked_passage_tokens_and_reports_it():
    lay = QALayout("gpt", seq_length=30, answer_tokens=4, eod=EOD, pad=PAD, virtual_tokens=3)
    q = [10, 11, 12, 13]
    p = lay.prompt(q, passages(k=2, r=16))                     # 32 passage tokens, budget 26-3-4=19
    assert p[-4:].tolist() == q
    kept = p[3:-4].tolist()
    assert kept == list(range(100, 119))                       # the first 19 tokens, in rank order
    assert (p[:3] == EOD).all()                                # v positions stay free for virtual tokens
    t = lay.truncation
    assert (t.passages_cut, t.passage_tokens_dropped, t.questions_cut) == (1, 13, 0)


def test_question_longer_than_room_keeps_its_end():
    lay = QALayout("gpt", seq_length=20, answer_tokens=4, eod=EOD, pad=PAD)
    q = list(range(10, 40))                                    # 30 tokens, room 16
    p = lay.prompt(q, passages())
    assert p.tolist() == q[-16:] and lay.truncation.questions_cut == 1


def test_answer_over_budget_is_cut_and_counted():
    lay = QALayout("gpt", seq_length=40, answer_tokens=3, eod=EOD, pad=PAD)
    item = lay.sample([10], [50, 51, 52, 53], passages())
    on = np.flatnonzero(item["loss_mask"])
    assert item["labels"][on].tolist() == [50, 51, 52]         # no room for eod
    assert lay.truncation.answers_cut == 1


def test_retro_layout_question_fills_first_chunk_passages_are_every_chunks_neighbours():
    m = 16
    lay = QALayout("retro", seq_length=999, answer_tokens=5, eod=EOD, pad=PAD, chunk_length=m)
    assert lay.seq_length == 2 * m and lay.prompt_length == m
    nb = passages(k=2, r=24)
    item = lay.sample([10, 11, 12], [50, 51], nb)
    assert item["tokens"][:m].tolist() == [EOD] * (m - 3) + [10, 11, 12]
    on = np.flatnonzero(item["loss_mask"])
    # every answer token is predicted from positions m-1 .. 2m-2: they see chunk 0's neighbours
    assert on.tolist() == [m - 1, m, m + 1] and on.max() <= 2 * m - 2
    assert item["neighbours"].shape == (2, 2, 24)
    for c in range(2):
        np.testing.assert_array_equal(item["neighbours"][c], nb)   # the same retrieved set GPT reads


def test_retro_sequence_grows_by_whole_chunks_with_the_answer_budget():
    lay = QALayout("retro", seq_length=0, answer_tokens=40, eod=EOD, pad=PAD, chunk_length=16)
    assert lay.seq_length == 16 * (1 + 3)


def test_layout_without_room_for_a_question_is_refused():
    with pytest.raises(UserError, match="no room for a question"):
        QALayout("gpt", seq_length=20, answer_tokens=10, eod=EOD, pad=PAD, virtual_tokens=6)
