"""Checkpoint loading that never runs a file's code.

mmengine's ``CheckpointLoader`` picks a loader by the path's scheme, and
every checkpoint the runner loads goes through it: ``load_from``,
``--resume`` (given or found in the work dir), ``Pretrained`` init_cfgs,
``_load_checkpoint``. In mmengine 0.10.7 the loaders of URLs (``http://``,
``https://``) and of the model zoos that resolve to URLs (``torchvision://``,
``modelzoo://``, ``open-mmlab://``, ``openmmlab://``, ``mmcls://``) unpickle
with ``weights_only=False`` (the default of
``torch.hub.load_state_dict_from_url``), so a downloaded file runs whatever
code it carries; the loaders of local files, ``pavi://`` and ``s3://`` /
``petrel://`` leave ``weights_only`` to torch's default, which
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns off.

Importing this module (``carafe_mm.compat``, ``carafe_mm.mmdet`` and
``carafe_mm.mmseg`` do, and so do our tools) registers, for each of those
schemes, a loader that finds or downloads the file as mmengine's does (the
same URL tables, the same ``torch.hub`` cache) and unpickles it with
``weights_only=True``. A file that holds anything but tensors and plain
Python values is refused with :class:`UnsafeCheckpointError`, an empty,
truncated or foreign one with :class:`CorruptCheckpointError`; both name
the file on disk and where it came from.
"""
import io
import logging
import os
import os.path as osp
import pickle
import re
from contextlib import contextmanager
from tempfile import TemporaryDirectory
from urllib.parse import urlparse

import mmengine
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (CheckpointLoader, _get_mmengine_home,
                                        _process_mmcls_checkpoint,
                                        get_deprecated_model_names,
                                        get_external_models, get_mmcls_models,
                                        get_torchvision_models)

MAKE_SAFE = 'tools/misc/make_checkpoint_safe.py'


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects that ``torch.load(weights_only=True)``
    refuses (nothing of it has been run)."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint is empty, truncated, or not written by ``torch.save``."""


def _describe(name, source):
    return name if source is None else f'{name} (from {source})'


def _torch_reason(error):
    """The first sentence of what torch's weights-only unpickler objected
    to, e.g. 'Trying to load unsupported GLOBAL posix.system whose module
    posix is blocked.'"""
    text = str(error)
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    elif '\n\n' in text:
        text = text.split('\n\n', 1)[1]
    lines = [line.strip() for line in text.strip().splitlines()]
    first = lines[0] if lines else str(error)
    return re.split(r'(?<=\.)\s', first)[0].rstrip('.')


def _head(file):
    """The first bytes of a path or a seekable file object."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, 'rb') as f:
            return f.read(16)
    position = file.tell()
    file.seek(0)
    head = file.read(16)
    file.seek(position)
    return head


def _refusal(error, file, name, source=None, downloaded=False):
    """The error to raise instead of ``error``, which ``torch.load`` raised
    on ``file`` (shown as ``name``), or None to re-raise ``error``."""
    where = _describe(name, source)
    again = ' Delete it to download it again.' if downloaded else ''
    try:
        head = _head(file)
    except OSError:
        return None
    if not head:
        return CorruptCheckpointError(
            f'{where} is empty (0 bytes): the save or download that wrote it '
            f'was probably interrupted.{again}')
    # torch.save writes a zip archive (torch >= 1.6) or a pickle (older)
    from_torch_save = head.startswith((b'PK\x03\x04', b'\x80'))
    if isinstance(error, pickle.UnpicklingError) and \
            'Weights only load failed' in str(error):
        if not from_torch_save:
            return CorruptCheckpointError(
                f'{where} is not a checkpoint written by torch.save (it '
                f'begins with {head!r}); it is not loaded.{again}')
        return UnsafeCheckpointError(
            f'Refusing to load {where}: it holds objects that '
            'torch.load(weights_only=True) does not accept '
            f'({_torch_reason(error)}), and unpickling them could run any '
            'code the file carries; nothing of it has been run. '
            'Checkpoints written by carafe_mm\'s SafeCheckpointHook hold '
            'only tensors and plain values. Only if you trust where this '
            'file comes from, rewrite it with\n'
            f'  python {MAKE_SAFE} {name} SAFE.pth --trust\n'
            'and load SAFE.pth instead: --trust unpickles the file with '
            'weights_only=False, which runs the code it holds.')
    truncated = isinstance(error, (EOFError, IndexError)) or (
        isinstance(error, RuntimeError)
        and re.search('PytorchStreamReader|magic number|corrupt', str(error)))
    if truncated:
        what = 'truncated, corrupt, or not written by torch.save' \
            if from_torch_save else \
            f'not a checkpoint written by torch.save (it begins with {head!r})'
        said = re.split(r'(?<=\.)\s', str(error))[0] or 'no message'
        return CorruptCheckpointError(
            f'{where} is {what} (torch.load: {type(error).__name__}: '
            f'{said}).{again}')
    return None


def _load(load, file, name, source=None, downloaded=False):
    """``load()``, a ``torch.load(file, weights_only=True)``, with its
    failures turned into errors that name the file."""
    try:
        return load()
    except Exception as error:
        refusal = _refusal(error, file, name, source, downloaded)
        if refusal is None:
            doing = 'loading' if not isinstance(file, (str, os.PathLike)) \
                or osp.exists(file) else 'downloading'
            error.add_note(f'while {doing} {_describe(name, source)}')
            raise
        raise refusal from None


def safe_load(file, map_location=None, name=None, source=None):
    """``torch.load(file, map_location, weights_only=True)``, whose errors
    name the file.

    Args:
        file (str | os.PathLike | file object): What to load.
        map_location: As for :func:`torch.load`. Defaults to None.
        name (str, optional): How to call ``file`` in messages. Defaults to
            ``file`` itself.
        source (str, optional): Where the file came from (a URL, a model-zoo
            name), for messages. Defaults to None.

    Raises:
        UnsafeCheckpointError: The file holds objects other than tensors and
            plain Python values; none of them has been created.
        CorruptCheckpointError: The file is empty, truncated, or not written
            by ``torch.save``.
    """
    name = str(file) if name is None else name
    return _load(
        lambda: torch.load(file, map_location=map_location, weights_only=True),
        file, name, source)


def _hub_cache_path(url, model_dir=None):
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url`` (torch
    2.13's naming: the URL path's basename in ``<hub dir>/checkpoints``)."""
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    return osp.join(model_dir, osp.basename(urlparse(url).path))


def _load_url(url, map_location, model_dir, progress, source):
    cached = _hub_cache_path(url, model_dir)
    source = url if source is None else f'{url} for {source}'
    return _load(
        lambda: torch.hub.load_state_dict_from_url(
            url,
            model_dir=model_dir,
            map_location=map_location,
            progress=progress,
            weights_only=True),
        cached,
        cached,
        source,
        downloaded=True)


def _load_url_rank_zero_first(url, map_location=None, source=None, **kwargs):
    """Download on rank 0 while the others wait, then load everywhere (as
    mmengine's ``load_from_http``; here rank 0 reaches the barrier even when
    it fails, so the other ranks raise too instead of hanging)."""
    kwargs.setdefault('model_dir', None)
    kwargs.setdefault('progress', os.isatty(0))
    rank, world_size = get_dist_info()
    checkpoint = error = None
    if rank == 0:
        try:
            checkpoint = _load_url(url, map_location, source=source, **kwargs)
        except Exception as e:  # raised after the barrier
            error = e
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = _load_url(url, map_location, source=source, **kwargs)
    if error is not None:
        raise error
    return checkpoint


def _model_url(urls, scheme, name):
    if name not in urls:
        raise KeyError(f'{scheme}{name}: no such model in mmengine '
                       f'{mmengine.__version__}\'s table (it has '
                       f'{", ".join(sorted(urls)[:8])}, ...)')
    return urls[name]


# The loaders, one per scheme of mmengine 0.10.7's runner/checkpoint.py, with
# the same names (CheckpointLoader logs the name after 'load_from_') and the
# same lookups, reusing mmengine's URL tables and torch.hub's download and
# cache. They differ in: weights_only=True and errors that name the file;
# torchvision:// without torchvision installed; an unknown zoo name says so;
# a rank-0 failure does not leave the other ranks waiting at the barrier.


def load_from_local(filename, map_location=None):
    """A local file (mmengine's ``load_from_local``, ``weights_only=True``).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load(filename, map_location)


def load_from_http(filename,
                   map_location=None,
                   model_dir=None,
                   progress=os.isatty(0)):
    """``http://`` and ``https://``: downloaded once into torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints``), rank 0 first, then loaded with
    ``weights_only=True``."""
    return _load_url_rank_zero_first(
        filename, map_location, model_dir=model_dir, progress=progress)


def _torchvision_urls():
    try:
        return get_torchvision_models()  # imports torchvision
    except ImportError:
        # Without torchvision, the names mmengine keeps for torchvision < 0.13
        # (resnet50, ...): enough for the configs of mmdet and carafe_mm.
        return mmengine.load(
            osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))


def load_from_torchvision(filename, map_location=None):
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``): the URL
    of torchvision's weights NAME, loaded as by :func:`load_from_http`. Works
    without torchvision for the names of torchvision 0.12 (``resnet50``)."""
    if filename.startswith('modelzoo://'):
        print_log(
            'The URL scheme of "modelzoo://" is deprecated, please '
            'use "torchvision://" instead',
            logger='current',
            level=logging.WARNING)
        scheme = 'modelzoo://'
    else:
        scheme = 'torchvision://'
    url = _model_url(_torchvision_urls(), scheme, filename[len(scheme):])
    return _load_url_rank_zero_first(url, map_location, source=filename)


def load_from_openmmlab(filename, map_location=None):
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: a URL from mmengine's
    table (``$MMENGINE_HOME/open_mmlab.json`` adds to it), loaded as by
    :func:`load_from_http`, or a file under ``$MMENGINE_HOME``."""
    scheme = 'open-mmlab://' if filename.startswith('open-mmlab://') else \
        'openmmlab://'
    name = filename[len(scheme):]
    deprecated = get_deprecated_model_names()
    if name in deprecated:
        print_log(
            f'{scheme}{name} is deprecated in favor of '
            f'{scheme}{deprecated[name]}',
            logger='current',
            level=logging.WARNING)
        name = deprecated[name]
    url = _model_url(get_external_models(), scheme, name)
    if url.startswith(('http://', 'https://')):
        return _load_url_rank_zero_first(url, map_location, source=filename)
    path = osp.join(_get_mmengine_home(), url)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} can not be found.')
    return safe_load(path, map_location, source=filename)


def load_from_mmcls(filename, map_location=None):
    """``mmcls://NAME``: mmcls's weights NAME, loaded as by
    :func:`load_from_http`, with the backbone's keys only."""
    url = _model_url(get_mmcls_models(), 'mmcls://', filename[8:])
    checkpoint = _load_url_rank_zero_first(url, map_location, source=filename)
    return _process_mmcls_checkpoint(checkpoint)


def load_from_pavi(filename, map_location=None):
    """``pavi://``: downloaded with pavi's modelcloud into a temporary
    directory, then loaded with ``weights_only=True``."""
    if not filename.startswith('pavi://'):
        raise ValueError(f'expected a path that starts with pavi://, '
                         f'but got {filename}')
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            'Please install pavi to load checkpoint from modelcloud.')
    model = modelcloud.get(filename[7:])
    with TemporaryDirectory() as tmp_dir:
        downloaded = osp.join(tmp_dir, model.name)
        model.download(downloaded)
        return safe_load(downloaded, map_location, source=filename)


def load_from_ceph(filename, map_location=None, backend='petrel'):
    """``s3://`` / ``petrel://`` (optionally ``CLUSTER:s3://``): read through
    mmengine's file backend, loaded with ``weights_only=True``."""
    file_backend = get_file_backend(
        filename, backend_args={'backend': backend})
    with io.BytesIO(file_backend.get(filename)) as buffer:
        return safe_load(buffer, map_location, name=filename)


SAFE_LOADERS = {
    '': load_from_local,
    ('http://', 'https://'): load_from_http,
    'pavi://': load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_ceph,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    'mmcls://': load_from_mmcls,
}


@contextmanager
def explain_unsafe_checkpoint():
    """Exit with the message of a checkpoint the loaders above refused
    (unsafe, empty or truncated: the message names the file and what to
    do), without a traceback (for scripts such as ``tools/test.py``)."""
    try:
        yield
    except (UnsafeCheckpointError, CorruptCheckpointError) as e:
        raise SystemExit(f'error: {e}') from e


def register_safe_loaders():
    """Register the loaders above in mmengine's ``CheckpointLoader`` in
    place of its own (done on import; call it again after something else
    has registered a loader for these schemes)."""
    for prefixes, loader in SAFE_LOADERS.items():
        CheckpointLoader.register_scheme(prefixes, loader, force=True)


def load_config(path, cfg_options=None, work_dir=None):
    """``Config.fromfile(path)`` as mmdet's and mmseg's tools load it:
    ``cfg_options`` (``--cfg-options``) merged, ``work_dir`` from the command
    line, else the config's, else ``./work_dirs/<config name>``; and the
    loaders above registered again after the config's ``custom_imports``,
    which may have registered loaders of their own."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    register_safe_loaders()
    return cfg


register_safe_loaders()
