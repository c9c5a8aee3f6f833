"""The studies behind ``rfml ism-study`` and ``rfml snr-study``, and the pieces they share.

- :mod:`rfml.studies.ism`: band, SNR and sample selection on the ISM interference set (Zhang et al., SPAWC 2019);
- :mod:`rfml.studies.snr`: single-SNR, offset, Boosting, Bagging and SNR-routed inference (Wang et al., WCL 2020);
- :mod:`rfml.studies.executor`: where trainings run (a local process pool, the calling process, or Ray);
- :mod:`rfml.studies.results`: the one resumable results store (a locked JSON-lines log) and the study folder's
  header that guards it;
- :mod:`rfml.studies.machine`: what a study records about the machine. Lightning's notices are silenced for the
  many small trainings of a study by :mod:`rfml.trainers.quiet`, which the demo uses too.

Nothing heavy is imported here: ``rfml --help`` and the two study CLIs stay light.
"""
