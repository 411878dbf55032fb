r"""Transfer learning for character models: carry a trained model over to a new text and vocabulary.

A character model pretrained on one text (tiny Shakespeare) can start training on another (a list of
surnames) from its learnt weights instead of from random ones. Two things have to be decided.

**The vocabulary.** The new text may use characters the old one never did (``ä``, ``ß``) and may not
use some it did. The embedding :math:`E` (row :math:`E_c` for character :math:`c`) and the output layer
(column :math:`c` of :math:`W_{hq}` and bias :math:`b_{q,c}` score character :math:`c`) are indexed by
character, so they are carried over *by character*; with primes for the new model,

.. math::

   E'_{c} = E_{c}, \qquad (W'_{hq})_{:, c} = (W_{hq})_{:, c}, \qquad b'_{q, c} = b_{q, c}
   \qquad \text{for every } c \text{ in both vocabularies,}

wherever each vocabulary puts :math:`c`. The rows of new characters keep the random initial values a
freshly built model gives them, so they start exactly as in a model trained from scratch. The recurrent
layer does not depend on the vocabulary and is copied whole (:func:`extend_vocab`). If the new
vocabulary is the union of both, characters the new text never uses keep their rows and learn to be
improbable.

**What to train.** Fine-tune everything, or freeze the recurrent layer
(``model.rnn.requires_grad_(False)``: it gets no gradient, so no optimizer moves it) and train only the
embedding and the output layer, which then learn to use the pretrained recurrent features for the new text.

References: Yosinski et al. (2014) How transferable are features in deep neural networks?;
Howard & Ruder (2018) Universal language model fine-tuning for text classification (ULMFiT).
"""
from __future__ import annotations

import copy

import torch

from .models import CharLM
from .text import Vocab

__all__ = ["extend_vocab"]


def extend_vocab(model: CharLM, old_vocab: Vocab, new_vocab: Vocab, seed: int = 0) -> CharLM:
    """A copy of ``model`` for ``new_vocab``: every weight carried over by character, new characters fresh.

    ``model`` must be a :class:`~rnnlib.models.CharLM` with an embedding (``embedding_dim`` set) built
    for ``old_vocab``. The returned model has ``len(new_vocab)`` embedding rows and outputs; the rows of
    characters in both vocabularies are copies of the old ones (in the new order), the rows of new
    characters are those of a fresh ``CharLM`` built with ``seed``, and the recurrent layer is a copy.
    ``model`` itself is not changed.
    """
    if not isinstance(model, CharLM):
        raise TypeError(f"extend_vocab needs a CharLM, got {type(model).__name__}")
    if model.embedding is None:
        raise ValueError("extend_vocab needs a CharLM with an embedding (built with embedding_dim=...): "
                         "with one-hot inputs the vocabulary is wired into the recurrent layer's input weights")
    if len(old_vocab) != model.vocab_size:
        raise ValueError(f"old_vocab has {len(old_vocab)} tokens but the model was built for {model.vocab_size}")
    shared = [c for c in new_vocab.itos if c in old_vocab]
    if not shared:
        raise ValueError("the two vocabularies share no character: there is nothing to carry over")
    with torch.random.fork_rng(devices=[]):  # seed the fresh rows without touching the caller's random state
        torch.manual_seed(seed)
        new = CharLM(len(new_vocab), hidden_size=model.hidden_size, num_layers=model.num_layers, cell=model.cell,
                     embedding_dim=model.embedding.embedding_dim, dropout=model.drop.p)
    new = new.to(model.head.weight)  # the old model's device and dtype
    new.rnn = copy.deepcopy(model.rnn)  # the same layer (torch.nn or rnnlib's) with the same weights
    new_rows = torch.tensor([new_vocab.stoi[c] for c in shared])
    old_rows = torch.tensor([old_vocab.stoi[c] for c in shared])
    with torch.no_grad():
        new.embedding.weight[new_rows] = model.embedding.weight[old_rows]  # (V', D)
        new.head.weight[new_rows] = model.head.weight[old_rows]            # (V', H)
        new.head.bias[new_rows] = model.head.bias[old_rows]                # (V',)
    return new
