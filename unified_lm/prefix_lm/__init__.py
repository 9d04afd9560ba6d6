"""The prefix LM's data and inference (the continuous path: Spectron, HuBERT+LLM ASR).

Its model lives in ``models.prefix``, its loss in ``losses.spectrogram``, its training in
the ``prefix`` recipe (and the ``ctc`` and ``textlm`` recipes that pre-train its parts).
"""
