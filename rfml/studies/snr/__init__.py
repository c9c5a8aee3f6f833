"""``rfml snr-study``: SNR-selected fast training (Wang et al., IEEE WCL 2020) and SNR-routed inference.

Modules: :mod:`~rfml.studies.snr.config` (the study's YAML), :mod:`~rfml.studies.snr.runs` (one training, named by
its spec), :mod:`~rfml.studies.snr.study` (single-SNR, offset, Boosting, Bagging, router experiments over one
resumable store), :mod:`~rfml.studies.snr.router` (:class:`~rfml.studies.snr.router.SNRRouter`),
:mod:`~rfml.studies.snr.report` and :mod:`~rfml.studies.snr.cli`.
"""
