"""Every config under configs/ loads, builds its model (backbones shrunk
to ResNet-18 without pretrained weights) and is what its name says;
aliases are one-line ``_base_`` files listed in configs/README.md; the
metafile names existing configs."""
import copy
import functools
import glob
import inspect
import os.path as osp
import re

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from carafe_mm.models import UPSAMPLERS
from .utils import REPO, shrink_detector, shrink_segmentor

CONFIGS = sorted(
    p for p in glob.glob(
        osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)
CONFIG_DIR = osp.join(REPO, 'configs')
# The aliases: one line, ``_base_ = '<another config>'``.
ALIAS = re.compile(r"_base_ = '(\.[\w./-]+\.py)'\n")


@functools.lru_cache(maxsize=None)
def _parse(path):
    return Config.fromfile(path)


def load(path):
    """The config at ``path``, parsed once per session (mmengine takes
    about half a second to find an ``mmdet::`` or ``mmseg::`` base)."""
    return copy.deepcopy(_parse(path))


def alias_target(path):
    """The config an alias names, relative to configs/; None if ``path``
    is no alias."""
    with open(path) as f:
        match = ALIAS.fullmatch(f.read())
    if match is None:
        return None
    target = osp.normpath(osp.join(osp.dirname(path), match[1]))
    return osp.relpath(target, CONFIG_DIR)


def test_there_are_configs():
    assert len(CONFIGS) > 40


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    cfg = load(path)
    assert cfg.custom_imports.allow_failed_imports is False
    assert any(h.type == 'SafeCheckpointHook' for h in cfg.custom_hooks)
    if '/toy/' not in path:
        if cfg.default_scope == 'mmdet':
            shrink_detector(cfg)
        else:
            shrink_segmentor(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------
# names (the grammar is in configs/README.md)

TYPES = {t.lower(): t for t in UPSAMPLERS}  # 'nearestconv': 'NearestConv'
OPTIONS = dict(cm='compressed_channels', enc='encoder_kernel', up='up_kernel')
NORMALIZERS = ('softmax', 'sigmoid', 'sigmoid-normalized')
UPERNET_SITES = ('ppm', 'fpn', 'fuse')
ALGORITHMS = {
    'faster-rcnn': 'FasterRCNN',
    'mask-rcnn': 'MaskRCNN',
    'upernet': 'EncoderDecoder'
}
# mmdet's and mmseg's datasets with errors that name the file
# (carafe_mm/datasets)
DATASETS = dict(coco='CheckedCocoDataset', ade20k='CheckedADE20KDataset')
# The options a name can set, and the default-valued ones it leaves out.
NAMED_OPTIONS = (*OPTIONS.values(), 'normalizer', 'dyscope')


def parse_spec(spec):
    """``'carafe-enc5-up7'`` -> ``('CARAFE', {'encoder_kernel': 5,
    'up_kernel': 7}, [])``: the upsampler (its type in kebab case), its
    options and the UperNet sites named after them."""
    words = spec.split('-')
    lengths = [
        n for n in range(len(words), 0, -1) if ''.join(words[:n]) in TYPES
    ]
    assert lengths, f'{spec!r} starts with no upsampler of {UPSAMPLERS}'
    n = lengths[0]  # the longest: nearest-conv, not nearest
    options, sites = {}, []
    for word in re.findall(r'sigmoid-normalized|[^-]+', '-'.join(words[n:])):
        number = re.fullmatch(r'([a-z]+)(\d+)', word)
        if word in NORMALIZERS:
            options['normalizer'] = word.replace('-', '_')
        elif word == 'dyscope':
            options['dyscope'] = True
        elif word in UPERNET_SITES:
            sites.append(word)
        else:
            assert number and number[1] in OPTIONS, f'unknown token {word!r}'
            options[OPTIONS[number[1]]] = int(number[2])
    return TYPES[''.join(words[:n])], options, sites


def parse_name(name):
    """What a config's name says: the algorithm, the ResNet depth, each
    upsampling site's ``(type, options)`` (options None: the library's own
    resizing, whatever its settings) and the schedule and data tokens."""
    algorithm, backbone, *rest = name.split('_')
    depth, _, spec = backbone.partition('-')
    sites = {}
    if algorithm == 'upernet':
        up_type, options, named = parse_spec(spec) if spec else (None, {}, [])
        for site in UPERNET_SITES:
            inside = up_type and (site in named or not named)
            sites[site] = (up_type, options) if inside else ('Bilinear', None)
    else:
        neck, _, spec = rest.pop(0).partition('-')
        assert neck == 'fpn', f'{name}: unknown neck {neck!r}'
        fpn = parse_spec(spec)[:2] if spec else None
        sites['neck'] = fpn or ('Nearest', None)
        if algorithm == 'mask-rcnn':
            # as mmdet's mask-rcnn_r50_fpn-carafe: without a mask-... token
            # the mask head has the FPN's upsampler, or mmdet's deconv.
            mask = None
            if rest[0].startswith('mask-'):
                mask = parse_spec(rest.pop(0)[len('mask-'):])[:2]
            sites['mask'] = mask or fpn or ('Deconv', None)
    assert re.fullmatch(r'r\d+', depth), f'{name}: unknown backbone {depth!r}'
    return dict(
        algorithm=algorithm, depth=int(depth[1:]), sites=sites, rest=rest)


def built_sites(model):
    """Each upsampling site of a model config: ``(type, cfg)``, cfg None
    for mmdet's and mmseg's own resizing."""

    def stock(name):  # mmcv's and torch's names: 'deconv', 'nearest'
        return TYPES[name.replace('_', '')], None

    if model.type == 'EncoderDecoder':
        head = model.decode_head
        cfgs = {s: head.get(f'{s}_upsample_cfg') for s in UPERNET_SITES}
        return {
            s: stock('bilinear') if cfg is None else (cfg.type, cfg)
            for s, cfg in cfgs.items()
        }
    sites = {}
    if model.neck.type == 'UpsamplerFPN':
        sites['neck'] = (model.neck.upsample_cfg.type, model.neck.upsample_cfg)
    else:
        assert model.neck.type == 'FPN'
        sites['neck'] = stock(
            model.neck.get('upsample_cfg', {}).get('mode', 'nearest'))
    mask_head = model.roi_head.get('mask_head')
    if mask_head is not None:
        if mask_head.type == 'UpsamplerMaskHead':
            sites['mask'] = (mask_head.upsample_cfg.type,
                             mask_head.upsample_cfg)
        else:
            assert mask_head.type == 'FCNMaskHead'
            sites['mask'] = stock(
                mask_head.get('upsample_cfg', {}).get('type', 'deconv'))
    return sites


def default_options(up_type):
    parameters = inspect.signature(MODELS.get(up_type)).parameters
    return {key: p.default for key, p in parameters.items()}


def check_schedule_and_data(cfg, algorithm, tokens):
    data = cfg.train_dataloader.dataset
    if tokens == ['toy']:
        assert data.data_root.startswith('data/toy_')
        return
    schedule, dataset = tokens
    dataset, _, size = dataset.partition('-')
    assert data.type == DATASETS[dataset]
    if algorithm == 'upernet':  # 4xb4-80k: 4 GPUs × 4 images, 80k iters
        gpus_batch_iters = re.fullmatch(r'(\d+)xb(\d+)-(\d+)k', schedule)
        assert cfg.train_dataloader.batch_size == int(gpus_batch_iters[2])
        assert cfg.train_cfg.max_iters == 1000 * int(gpus_batch_iters[3])
        assert cfg.crop_size == tuple(int(s) for s in size.split('x'))
    else:  # 1x: 12 epochs
        assert cfg.train_cfg.max_epochs == 12 * int(schedule.rstrip('x'))


NAMED = [p for p in CONFIGS if osp.dirname(p) != CONFIG_DIR]


@pytest.mark.parametrize(
    'path', NAMED, ids=[osp.relpath(p, REPO) for p in NAMED])
def test_config_is_what_its_name_says(path):
    """``faster-rcnn_r50_fpn-carafe-enc5-up7_1x_coco``: Faster R-CNN,
    ResNet-50, CARAFE with k_enc = 5 and k_up = 7 in the FPN and its other
    options at their defaults, 12 epochs of COCO."""
    name = osp.splitext(osp.basename(path))[0]
    said = parse_name(name)
    cfg = load(path)
    assert cfg.model.type == ALGORITHMS[said['algorithm']]
    assert cfg.model.backbone.depth == said['depth']
    built = built_sites(cfg.model)
    assert set(built) == set(said['sites'])
    for site, (said_type, said_options) in said['sites'].items():
        built_type, site_cfg = built[site]
        assert built_type == said_type, (
            f'{name}: the {site} upsampler is {built_type}, not {said_type}')
        if site_cfg is None or said_options is None:
            continue
        defaults = default_options(built_type)
        assert set(said_options) <= set(defaults), name
        for key in set(NAMED_OPTIONS) & set(defaults):
            value = site_cfg.get(key, defaults[key])
            assert value == said_options.get(key, defaults[key]), (
                f'{name}: the {site} upsampler has {key}={value!r}')
    check_schedule_and_data(cfg, said['algorithm'], said['rest'])


def test_the_name_parser():
    kernels = dict(encoder_kernel=5, up_kernel=7)
    assert parse_spec('carafe-enc5-up7') == ('CARAFE', kernels, [])
    options = dict(compressed_channels=16, normalizer='sigmoid_normalized')
    assert parse_spec('carafe-cm16-sigmoid-normalized') == ('CARAFE', options,
                                                            [])
    assert parse_spec('nearest-conv') == ('NearestConv', {}, [])
    assert parse_spec('carafe-ppm-fuse')[2] == ['ppm', 'fuse']
    with pytest.raises(AssertionError, match="unknown token 'k9'"):
        parse_spec('carafe-k9')
    said = parse_name('mask-rcnn_r50_fpn-carafe_mask-deconv_1x_coco')
    assert said['sites'] == dict(neck=('CARAFE', {}), mask=('Deconv', {}))
    assert parse_name('mask-rcnn_r50_fpn-a2u_1x_coco')['sites']['mask'] == (
        'A2U', {})


# ---------------------------------------------------------------------------
# aliases and the metafile


def read_alias_table():
    """configs/README.md's table of aliases: {alias: config}."""
    with open(osp.join(CONFIG_DIR, 'README.md')) as f:
        text = f.read()
    rows = re.findall(r'^\| `([\w./-]+\.py)` \| `([\w./-]+\.py)` \|', text,
                      re.M)
    assert rows, 'configs/README.md lists no aliases'
    return dict(rows)


def test_aliases_are_one_line_and_listed_once():
    table = read_alias_table()
    aliases = {
        osp.relpath(p, CONFIG_DIR): alias_target(p)
        for p in CONFIGS if alias_target(p) is not None
    }
    assert aliases == table
    for alias, target in aliases.items():
        assert alias_target(osp.join(CONFIG_DIR, target)) is None, alias
    # the names the README promised, at the top of configs/
    root = {osp.relpath(p, CONFIG_DIR) for p in CONFIGS if p not in NAMED}
    assert len(root) == 8 and root <= set(aliases)


def test_metafile_names_existing_configs():
    with open(osp.join(CONFIG_DIR, 'metafile.yml')) as f:
        meta = yaml.safe_load(f)
    collections = {c['Name']: c for c in meta['Collections']}
    for collection in collections.values():
        assert osp.isfile(osp.join(REPO, collection['README']))
    listed = set()
    for model in meta['Models']:
        assert model['In Collection'] in collections
        path = osp.join(REPO, model['Config'])
        assert osp.isfile(path), model['Config']
        assert alias_target(path) is None, model['Config']
        assert model['Name'] == osp.splitext(osp.basename(path))[0]
        listed.add(path)
    main = glob.glob(osp.join(CONFIG_DIR, '[ds]*', '*-carafe_*.py'))
    assert main and set(main) <= listed
