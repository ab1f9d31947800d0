"""The synthetic encyclopedia: the corpus, QA benchmark and RAG splits the project ships with.

Why it exists: the project must run end to end (pretraining, retrieval, PEFT, QA evaluation)
offline, on a fresh clone, with no dataset download, and the questions must be answerable only
from the corpus. So it generates one: fictional entities (no answer can come from a model's
prior knowledge), every fact written in at least two documents with different wording (so
retrieval has something to find), one held-out question per fact. The same ``(num_entities,
seed)`` gives the same bytes. ``data/prepare.py`` writes it, with its tokenizer and indexed
dataset, into the bundled data directory (``data.source=bundled``, the default corpus of every
config); real corpora come in through ``data.source=indexed`` and the task loaders
(``data/tasks/``) instead.

Public API (import the submodules; this package imports nothing on its own):

* ``encyclopedia``: ``generate(num_entities, seed, split, reading) -> Encyclopedia``,
  ``GENERATOR_VERSION``, ``SPLITS``, ``document_split(n, split)``, ``parse_split``,
  ``write_documents / write_facts / write_qa``, ``read_documents / read_qa``
* ``world``: ``build_world(num_entities, rng)``, ``Entity`` (the facts); ``names``: ``NameBank``
* ``articles`` / ``lists``: the prose (``Renderer``, ``list_drafts``); ``Renderer`` is put together from
  ``writer`` (``Writer``: names, asides, template picking), ``place_articles`` and ``thing_articles``;
  ``prose``: ``Sentence``, ``Draft``, ``draft_text`` and the English helpers
* ``qa``: ``make_questions``, ``split_by_entity``, ``answers_for``, ``contains_words``
* ``rag_splits``: ``build_rag_splits(enc, k, per_split, seed)`` -> the four RAG ability splits
  (noise, negative, integration, counterfactual) with gold labels; ``REFUSAL``
"""
