"""galmeta: a course on meta-learning with real SDSS galaxies.

The package is the single source of truth for code the notebooks share. Modules follow the course's
steps; each names the notebook that introduces it. ``tests/test_layout.py`` checks that this map names
every module, that no module imports itself through others, and that modules and classes stay small.

Set-up and plumbing
    ``galmeta.config``         run mode (CI / laptop / full), data home, seeds, device, progress bars
    ``galmeta.cli``            the ``galmeta`` command line (``python -m galmeta`` is the same)
    ``galmeta.course``         generate and run the notebooks; student copies
    ``galmeta.book``           the executed notebooks as a book (Sphinx, MyST-NB, sphinx-book-theme)
    ``galmeta.course_files``   the checkout, the commit the notebooks come from, a notebook's figures
    ``galmeta.safe_files``     locks, atomic writes and exclusive creates for every file galmeta writes
Data (notebooks 01, 07)
    ``galmeta.data``           the galaxy table: query, SkyServer client, reading, data home, snapshots
    ``galmeta.datasets``       the embedded SDSS and SAMI DR3 tables with their provenance
    ``galmeta.sami``           SAMI DR3: joins, cleaning, environments as tasks (notebook 07)
    ``galmeta.samples``        the sealed confirmation sample: a fifth of the SDSS imaging runs (notebook 02)
Tasks (notebook 02)
    ``galmeta.cleaning``       counted cleaning, the redness target, the g, r, i, z features
    ``galmeta.leaks``          leak measurement: no feature may predict the label as well as the target
    ``galmeta.tasks``          redshift slices, rotating folds, preprocessing, task sampling, catalogues
MAML from scratch (notebook 03)
    ``galmeta.maml_numpy``     MLP, exact second-order meta-gradients, meta-training, in NumPy
    ``galmeta.validation``     the input rules both learners apply, in one place
    ``galmeta.sinusoid``       the MAML paper's sinusoid benchmark (notebooks 03, 04)
The MAML family in PyTorch (notebook 04)
    ``galmeta.algorithms``     one table of the algorithms' traits (second order, what adapts, learned rates)
    ``galmeta.maml_functional`` the MLP, batched forward passes and the functional meta-gradient
    ``galmeta.meta_config``    hyperparameters, MAML++ settings and its multi-step loss weights
    ``galmeta.inner_loop``     the inner loop: per-task adaptation with learned rates and clipping
    ``galmeta.maml_torch``     ``MetaLearner``: meta-loss, meta-update, adaptation, prediction
    ``galmeta.training``       the meta-training loop, early stopping, the divergence guard
    ``galmeta.population``     many meta-learners of one configuration trained as one batched computation
    ``galmeta.checkpoints``    safe checkpoints (tensors and plain data only), resume rules
    ``galmeta.distributed``    data-parallel meta-training over a process group
    ``galmeta.train``          the ``galmeta train`` / ``torchrun`` launcher
Hierarchical Bayes (notebook 05)
    ``galmeta.hierarchical``   empirical Bayes, the hierarchical linear model and its closed-form predictive
    ``galmeta.bayesian_last_layer`` the meta-learned Bayesian last layer (ALPaCA), started at that model
Evaluation (notebooks 06, 07)
    ``galmeta.learners``       the ``Learner`` interface, draws, the meta-learners as learners
    ``galmeta.baselines``      the non-meta baselines, each one ``Learner``
    ``galmeta.evaluation_config`` the sizes of one evaluation run
    ``galmeta.evaluate``       the protocol: folds, draws, tuning on meta-validation, the run
    ``galmeta.results``        what a run measured, merged across runs, with intervals
    ``galmeta.metrics``        sigma_NMAD, the slice bootstrap, paired differences
    ``galmeta.reports``        summary and paired tables (CSV, Markdown)
    ``galmeta.results_files``  results saved and loaded as JSON + NumPy arrays (no pickle)
    ``galmeta.plots``          the evaluation's figures
    ``galmeta.result_tables``  the README's tables, printed from the committed per-draw result files
"""

__version__ = "0.1.0"

_FROM_CONFIG = ("MODE", "data_home", "seed_everything", "try_device")


def __getattr__(name):
    # lazy, so that `galmeta.cli` can report a bad GALMETA_MODE (read by galmeta.config) as a message
    if name in _FROM_CONFIG:
        from galmeta import config

        return getattr(config, name)
    raise AttributeError(f"module 'galmeta' has no attribute {name!r}")
