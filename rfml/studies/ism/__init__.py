"""``rfml ism-study``: the band- and sample-selection tables of Zhang et al. (SPAWC 2019) on the ISM interference set.

Zhang, Seyfi, Ju, Ramjee, El Gamal, Eldar, "Deep Learning for Interference Identification: Band, Training SNR, and
Sample Selection" (arXiv 1905.08054), on the 15-class data of Schmidt, Block and Meier (INDIN 2017).

Settings (one trained model each, per seed):

- ``full``: FFT I/Q over the whole 10 MHz (128 bins, 15 classes);
- ``band4``: only the FFT bins of 2422–2424 and 2429–2431 MHz (52 bins; the 10 classes seen there);
- ``band2``: only 2429–2431 MHz (26 bins, 7 classes);
- ``sample/<method>/<rate>``: the FFT amplitude/phase view reduced to 1/rate of its components by ``uniform``,
  ``random``, ``magnitude`` or ``pca`` selection (fitted on the training split).

Every run goes through the project's LightningCLI path (``rfml fit`` with a per-run YAML written beside the results:
``OUT/runs/<run>/config.yaml``, which ``rfml fit -c`` reruns as is), stops early on the validation split, and tests its
best checkpoint. Each finished run is appended to ``OUT/results.jsonl`` (:mod:`rfml.studies.results`), so an
interrupted study resumes where it stopped; ``OUT/report.md`` and ``OUT/accuracy_vs_snr*.png`` hold the tables and
figures next to the paper's numbers.

Modules: :mod:`~rfml.studies.ism.config` (what a study runs), :mod:`~rfml.studies.ism.plan` (its runs and their
``rfml fit`` configs), :mod:`~rfml.studies.ism.runs` (one training), :mod:`~rfml.studies.ism.study`
(:func:`~rfml.studies.ism.study.run_study`, resume), :mod:`~rfml.studies.ism.report`
(:func:`~rfml.studies.ism.report.write_ism_report`) and :mod:`~rfml.studies.ism.cli`.
"""
