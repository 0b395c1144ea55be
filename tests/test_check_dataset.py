"""tools/data/check_dataset.py on the toy sets (clean) and on corrupted
copies (every planted fault named), and the training-time errors and
warnings of CheckedCocoDataset and CheckSegMap that name the file."""
import json
import math
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from .utils import REPO, toy_data_options

FASTER_TOY = 'configs/toy/faster-rcnn_r18_fpn-carafe_toy.py'
UPERNET_TOY = 'configs/toy/upernet_r18-carafe_toy.py'


def run(args, timeout=300):
    result = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def check_dataset(config, options, *extra):
    return run([
        sys.executable, 'tools/data/check_dataset.py', config, *extra,
        '--cfg-options', *options
    ])


def seg_options(root):
    return [
        f'{split}_dataloader.dataset.data_root={root}/'
        for split in ('train', 'val', 'test')
    ]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, data, **kwargs):
    with open(path, 'w') as f:
        json.dump(data, f, **kwargs)


@pytest.fixture
def coco(toy_coco, tmp_path):
    """A copy of the toy COCO set to corrupt."""
    return shutil.copytree(toy_coco, str(tmp_path / 'coco'))


@pytest.fixture
def ade(toy_ade20k, tmp_path):
    """A copy of the toy ADE20K set to corrupt."""
    return shutil.copytree(toy_ade20k, str(tmp_path / 'ade'))


def check_in_process(capsys, config, options, *extra):
    """check_dataset's main() in this process (faster than a new one)."""
    rc = load_tool().main(
        [osp.join(REPO, config), *extra, '--cfg-options', *options])
    return rc, capsys.readouterr().out


def test_clean_toy_sets_pass(toy_coco, toy_ade20k, capsys):
    rc, out = check_dataset(FASTER_TOY, toy_data_options(toy_coco))
    assert rc == 0, out
    assert 'No problems found.' in out
    assert '8 images' in out and 'test: the same dataset as val' in out
    rc, out = check_in_process(capsys, UPERNET_TOY, seg_options(toy_ade20k))
    assert rc == 0, out
    assert 'No problems found.' in out and '4 classes' in out


def plant_coco_faults(root):
    """Corrupt the train annotations and images; return what to find."""
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    data = read_json(ann_file)
    anns = data['annotations']
    assert len(anns) >= 6
    anns[0]['bbox'][2] = 0  # degenerate
    anns[1]['bbox'][0] = math.nan
    anns[2]['category_id'] = 99
    anns[3]['image_id'] = 999
    anns[4]['bbox'][:2] = [500.0, 500.0]  # outside the 96x96 image
    del anns[5]['bbox']
    write_json(ann_file, data)  # NaN is written as NaN, which json reads
    images = data['images']
    missing = osp.join(root, 'train', images[1]['file_name'])
    os.remove(missing)
    unreadable = osp.join(root, 'train', images[2]['file_name'])
    with open(unreadable, 'wb') as f:
        f.write(b'not a PNG at all')
    data_root = root + '/'
    return {
        f'annotation id {anns[0]["id"]}': 'width or height <= 0',
        f'annotation id {anns[1]["id"]}': 'has NaN or inf',
        f'annotation id {anns[2]["id"]}': "category_id 99 is not in",
        f'annotation id {anns[3]["id"]}': 'refers to image_id 999',
        f'annotation id {anns[4]["id"]}': 'is outside the 96x96 image',
        f'annotation id {anns[5]["id"]}': 'has no bbox',
        data_root + 'train/' + images[1]['file_name']: 'does not exist',
        data_root + 'train/' + images[2]['file_name']:
        'is not a readable image',
    }, ann_file


def malformed_json(path):
    """Rewrite ``path`` with a syntax error on a line of its own; return
    the error json itself reports for it."""
    text = json.dumps(read_json(path), indent=1)
    text = text.replace('"file_name":', '"file_name"', 1)
    with open(path, 'w') as f:
        f.write(text)
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(text)
    assert info.value.lineno > 1
    return f'line {info.value.lineno}, column {info.value.colno}'


def test_corrupted_coco_every_fault_named(coco):
    expected, train_ann = plant_coco_faults(coco)
    val_ann = osp.join(coco, 'annotations', 'instances_val.json')
    position = malformed_json(val_ann)
    no_images = osp.join(coco, 'annotations', 'instances_test.json')
    data = read_json(osp.join(coco, 'annotations', 'instances_train.json'))
    del data['images']
    write_json(no_images, data)
    rc, out = check_dataset(FASTER_TOY, [
        *toy_data_options(coco),
        'test_dataloader.dataset.ann_file=annotations/instances_test.json'
    ])
    assert rc == 1, out
    lines = out.splitlines()
    for where, what in expected.items():
        assert any(where in line and what in line
                   for line in lines), (where, what, out)
    for line in lines:
        if 'annotation id' in line:
            assert train_ann in line
    assert any(
        val_ann in line and 'is not valid JSON' in line and position in line
        for line in lines), out
    assert any(no_images in line and "no 'images' key" in line
               for line in lines), out
    assert 'train: 3 errors, 5 left out' in out
    assert '10 problems in 5 files' in out, out


def plant_ade_faults(root):
    ann = osp.join(root, 'annotations', 'training')
    img = osp.join(root, 'images', 'training')
    label = cv2.imread(osp.join(ann, 'toy_000000.png'), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(osp.join(ann, 'toy_000000.png'), label[:80])
    cv2.imwrite(
        osp.join(ann, 'toy_000001.png'),
        np.repeat(label[..., None], 3, axis=2) * 40)
    label[10, 10] = 199
    cv2.imwrite(osp.join(ann, 'toy_000002.png'), label)
    os.remove(osp.join(img, 'toy_000003.jpg'))
    with open(osp.join(img, 'toy_000004.jpg'), 'wb') as f:
        f.write(b'\xff\xd8 truncated')
    os.remove(osp.join(ann, 'toy_000005.png'))
    return {
        osp.join(ann, 'toy_000000.png'): 'is 96x80 (WxH) but its image',
        osp.join(ann, 'toy_000001.png'): 'has 3 channels',
        osp.join(ann, 'toy_000002.png'): 'has values 199 outside the 4',
        osp.join(ann, 'toy_000003.png'): 'has no image',
        osp.join(img, 'toy_000004.jpg'): 'is not a readable image',
        osp.join(ann, 'toy_000005.png'): 'does not exist',
    }


def test_corrupted_ade20k_every_fault_named(ade, capsys):
    expected = plant_ade_faults(ade)
    rc, out = check_in_process(capsys, UPERNET_TOY, seg_options(ade),
                               '--split', 'train', 'val')
    assert rc == 1, out
    lines = out.splitlines()
    for where, what in expected.items():
        assert any(where in line and what in line
                   for line in lines), (where, what, out)
    assert 'train: 5 errors, 1 left out' in out, out
    assert 'val: no problems' in out


# Training time.


def build(config, split, **dataset_options):
    from mmengine.registry import DATASETS, init_default_scope
    cfg = Config.fromfile(osp.join(REPO, config))
    init_default_scope(cfg.default_scope)
    dataset = cfg[f'{split}_dataloader'].dataset
    dataset.update(dataset_options)
    return DATASETS.build(dataset)


def test_checked_coco_dataset_is_coco_dataset_on_clean_data(toy_coco):
    checked = build(FASTER_TOY, 'train', data_root=toy_coco + '/')
    plain = build(
        FASTER_TOY, 'train', data_root=toy_coco + '/', type='CocoDataset')
    assert type(checked).__name__ == 'CheckedCocoDataset'
    assert len(checked) == len(plain) == 8
    assert [checked.get_data_info(i)
            for i in range(8)] == [plain.get_data_info(i) for i in range(8)]


def test_coco_training_errors_name_the_file(coco):
    ann_file = osp.join(coco, 'annotations', 'instances_train.json')
    data = read_json(ann_file)

    position = malformed_json(ann_file)
    with pytest.raises(
            ValueError,
            match=f'{re.escape(ann_file)} is not valid JSON: '
            f'.* at {position}'):
        build(FASTER_TOY, 'train', data_root=coco + '/')
    with open(ann_file, 'w'):
        pass
    with pytest.raises(ValueError, match=f'{re.escape(ann_file)} is empty'):
        build(FASTER_TOY, 'train', data_root=coco + '/')
    for key in ('images', 'annotations', 'categories'):
        write_json(ann_file, {k: v for k, v in data.items() if k != key})
        with pytest.raises(
                ValueError, match=f"{re.escape(ann_file)}: no '{key}' key"):
            build(FASTER_TOY, 'train', data_root=coco + '/')
    # An image-info file (no annotations) is fine in test mode.
    write_json(ann_file, {k: v for k, v in data.items() if k != 'annotations'})
    assert len(
        build(FASTER_TOY, 'val', data_root=coco + '/', ann_file=ann_file)) == 8

    renamed = json.loads(json.dumps(data))
    renamed['categories'][1]['name'] = 'circle'
    write_json(ann_file, renamed)
    with pytest.raises(ValueError, match=r"classes \('disk',\) are not"):
        build(FASTER_TOY, 'train', data_root=coco + '/')

    broken = json.loads(json.dumps(data))
    del broken['annotations'][3]['bbox']
    write_json(ann_file, broken)
    with pytest.raises(
            ValueError,
            match=f'{re.escape(ann_file)}: 1 annotations would fail '
            'training: annotation id 4 has no bbox'):
        build(FASTER_TOY, 'train', data_root=coco + '/')
    infinite = json.loads(json.dumps(data))
    infinite['annotations'][2]['bbox'][2] = math.inf  # CocoDataset keeps it
    write_json(ann_file, infinite)
    with pytest.raises(
            ValueError,
            match=r'annotation id 3 bbox \[.*, inf, .*\] is infinite but '
            'mmdet keeps it'):
        build(FASTER_TOY, 'train', data_root=coco + '/')

    write_json(ann_file, dict(data, annotations=[]))
    with pytest.raises(
            ValueError, match=f'{re.escape(ann_file)}: no image is left of 8'):
        build(FASTER_TOY, 'train', data_root=coco + '/')


def test_coco_dropped_annotations_warn_with_file_and_counts(coco):
    ann_file = osp.join(coco, 'annotations', 'instances_train.json')
    data = read_json(ann_file)
    total = len(data['annotations'])
    data['annotations'][0]['bbox'][3] = -1
    data['annotations'][1]['bbox'][1] = math.inf
    data['annotations'][2]['category_id'] = 7
    write_json(ann_file, data)
    with pytest.warns(UserWarning) as record:
        dataset = build(FASTER_TOY, 'train', data_root=coco + '/')
    messages = [str(w.message) for w in record if ann_file in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in record]
    assert f'mmdet leaves out 3 of {total} annotations (1 degenerate bbox, ' \
        '1 NaN/inf bbox, 1 unknown category_id)' in messages[0]
    kept = sum(
        len(dataset.get_data_info(i)['instances'])
        for i in range(len(dataset)))
    assert kept == total - 3  # the same annotations CocoDataset keeps


def test_check_seg_map_names_the_file(ade):
    plant_ade_faults(ade)
    ann = osp.join(ade, 'annotations', 'training')
    dataset = build(UPERNET_TOY, 'train', data_root=ade + '/')
    by_name = {
        osp.basename(dataset.get_data_info(i)['seg_map_path']): i
        for i in range(len(dataset))
    }
    cases = {
        'toy_000000.png':
        r'is 96x80 \(WxH\) but its image .*toy_000000.jpg '
        'is 96x96',
        'toy_000001.png':
        'has 3 channels',
        'toy_000002.png':
        r'has label values 198 after reduce_zero_label, '
        r'outside the 4 classes \[0, 4\) and the ignore index 255',
    }
    for name, message in cases.items():
        with pytest.raises(
                ValueError,
                match=f'{re.escape(osp.join(ann, name))} '
                f'{message}'):
            dataset[by_name[name]]
    assert dataset[by_name['toy_000006.png']]['inputs'].shape[1:] == (96, 96)
    val = build(UPERNET_TOY, 'val', data_root=ade + '/')
    assert val[0]['data_samples'].gt_sem_seg.data.shape == (1, 96, 96)


def test_check_seg_map_argument():
    from carafe_mm.datasets.check_seg_map import CheckSegMap
    for bad in (0, 2.5, True, None):
        with pytest.raises(ValueError, match='num_classes must be a positive'):
            CheckSegMap(num_classes=bad)


def test_train_py_errors_name_the_file(coco, ade, tmp_path):
    ann_file = osp.join(coco, 'annotations', 'instances_train.json')
    data = read_json(ann_file)
    del data['images']
    write_json(ann_file, data)
    rc, out = run([
        sys.executable, 'tools/train.py', FASTER_TOY, '--work-dir',
        str(tmp_path / 'det'), '--cfg-options', *toy_data_options(coco)
    ])
    assert rc != 0
    assert f"{ann_file}: no 'images' key" in out, out[-3000:]

    label = osp.join(ade, 'annotations', 'training', 'toy_000003.png')
    rgb = cv2.imread(label, cv2.IMREAD_UNCHANGED)
    cv2.imwrite(label, np.repeat(rgb[..., None], 3, axis=2))
    rc, out = run([
        sys.executable, 'tools/train.py', UPERNET_TOY, '--work-dir',
        str(tmp_path / 'seg'), '--cfg-options', 'train_cfg.max_iters=2',
        *seg_options(ade)
    ])
    assert rc != 0
    assert f'{label} has 3 channels' in out, out[-3000:]


def load_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'check_dataset', osp.join(REPO, 'tools', 'data', 'check_dataset.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules['check_dataset'] = module  # worker processes pickle by name
    spec.loader.exec_module(module)
    return module


def test_wrapped_dataset_and_num_classes_mismatch(coco, tmp_path, capsys):
    """A RepeatDataset is checked through to its COCO file; a head whose
    num_classes is not the dataset's is reported."""
    plant_coco_faults(coco)
    config = tmp_path / 'wrapped.py'
    config.write_text(
        f"_base_ = '{osp.join(REPO, FASTER_TOY)}'\n"
        'train_dataloader = dict(dataset=dict(_delete_=True, '
        "type='RepeatDataset', times=2, "
        'dataset={{_base_.train_dataloader.dataset}}))\n'
        'model = dict(roi_head=dict(bbox_head=dict(num_classes=5)))\n')
    tool = load_tool()
    rc = tool.main([
        str(config), '--split', 'train', '--workers', '0', '--cfg-options',
        f'train_dataloader.dataset.dataset.data_root={coco}/'
    ])
    out = capsys.readouterr().out
    assert rc == 1
    assert 'annotation id 1 (image 000000.png)' in out
    assert 'model bbox_head.num_classes is 5 but the dataset has 3 ' \
        "classes ('square', 'disk', 'triangle')" in out
    assert 'train: 4 errors, 5 left out' in out


def test_reduce_zero_label_decides_the_valid_values(toy_ade20k, capsys):
    """Without reduce_zero_label, the toy labels 0..4 hold one value (4)
    too many for 4 classes, and LoadAnnotations disagrees with the
    dataset."""
    tool = load_tool()
    rc = tool.main([
        osp.join(REPO, UPERNET_TOY), '--split', 'val', '--workers', '0',
        '--cfg-options', *seg_options(toy_ade20k),
        'val_dataloader.dataset.reduce_zero_label=False'
    ])
    out = capsys.readouterr().out
    assert rc == 1
    assert 'LoadAnnotations has reduce_zero_label=True but the dataset ' \
        'False' in out
    labels = osp.join(toy_ade20k, 'annotations', 'validation')
    assert any(line.strip().startswith(labels) and line.endswith(
        'has values 4 outside the 4 classes (valid: 0..3 and 255 '
        '(ignored))') for line in out.splitlines()), out


def test_annotation_checks_agree_with_coco_dataset(coco):
    """coco_annotation_problem says None for exactly the annotations that
    mmdet's own CocoDataset keeps (one image per annotation here)."""
    from carafe_mm.datasets.checks import coco_annotation_problem
    nan, inf = math.nan, math.inf
    boxes = [([10, 10, 20, 20], 400), ([nan, 10, 20, 20], 400),
             ([10, 10, nan, 20], 400), ([10, 10, 20, inf], 400),
             ([10, 10, 0, 20], 400), ([10, 10, 20, -1], 400),
             ([10, 10, 0.5, 20], 10), ([10, 10, 20, 0.9], 18),
             ([-30, 10, 20, 20], 400), ([100, 10, 20, 20], 400),
             ([10, 96, 20, 20], 400), ([90, 90, 20, 20], 400),
             ([-5, -5, 20, 20], 400), ([10, 10, 20, 20], 0),
             ([10, 10, 20, 20], -3), ([10, 10, 20, 20], nan)]
    ann_file = osp.join(coco, 'annotations', 'instances_train.json')
    data = read_json(ann_file)
    image = dict(data['images'][0])
    data['images'], data['annotations'] = [], []
    # then two of an unknown category, which mmdet leaves out whatever the
    # box (an infinite one too)
    unknown = [([10, 10, 20, 20], 400), ([10, 10, 20, inf], 400)]
    for i, (bbox, area) in enumerate(boxes + unknown):
        data['images'].append(dict(image, id=i))
        data['annotations'].append(
            dict(
                id=i + 1,
                image_id=i,
                bbox=bbox,
                area=area,
                category_id=7 if i >= len(boxes) else 1,
                iscrowd=0))
    write_json(ann_file, data)
    dataset = build(
        FASTER_TOY,
        'train',
        type='CocoDataset',
        data_root=coco + '/',
        test_mode=True)
    kept = [
        len(dataset.get_data_info(i)['instances']) == 1
        for i in range(len(dataset))
    ]
    category_ids = {c['id'] for c in data['categories']}
    problems = [
        coco_annotation_problem(ann, image, category_ids)
        for ann in data['annotations']
    ]
    # An infinite width or height passes mmdet's test: an error for us.
    infinite = [
        p is not None and p[1] == 'infinite bbox kept' for p in problems
    ]
    assert infinite == [i == 3 for i in range(len(problems))]
    assert kept == [p is None or inf for p, inf in zip(problems, infinite)]
    assert 2 < sum(kept) < len(kept)


def test_worker_processes_report_the_same(tmp_path, capsys):
    """With enough files the checks run in a process pool; a fault in one
    of them is still named, in order."""
    root = str(tmp_path / 'ade')
    subprocess.run([
        sys.executable, 'tools/data/make_toy_ade20k.py', '--out', root,
        '--train', '70', '--val', '1', '--size', '32'
    ],
                   cwd=REPO,
                   check=True,
                   capture_output=True)
    label = osp.join(root, 'annotations', 'training', 'toy_000066.png')
    cv2.imwrite(label, np.full((32, 32), 9, np.uint8))
    tool = load_tool()
    args = [
        osp.join(REPO, UPERNET_TOY), '--split', 'train', '--cfg-options',
        f'train_dataloader.dataset.data_root={root}/'
    ]
    assert tool.main([*args, '--workers', '2']) == 1
    parallel = capsys.readouterr().out
    assert f'{label} has values 9 outside the 4 classes' in parallel
    assert tool.main([*args, '--workers', '0']) == 1
    assert capsys.readouterr().out == parallel


def test_truncated_image_found_from_header_and_by_decoding(
        toy_coco, coco, capsys):
    """--decode-images decodes as LoadImageFromFile does: clean images
    pass, a truncated PNG is named (as it is from its header alone)."""
    rc, out = check_in_process(capsys, FASTER_TOY, toy_data_options(toy_coco),
                               '--split', 'val', '--decode-images')
    assert rc == 0, out
    path = osp.join(coco, 'val', '000001.png')
    with open(path, 'rb') as f:
        content = f.read()
    with open(path, 'wb') as f:
        f.write(content[:len(content) // 2])
    for extra in ([], ['--decode-images']):
        rc, out = check_in_process(capsys, FASTER_TOY, toy_data_options(coco),
                                   '--split', 'val', *extra)
        assert rc == 1
        assert f'{path} is not a readable image' in out


PAPER_CONFIGS = [
    'configs/detection/faster-rcnn_r50_fpn_1x_coco.py',
    'configs/detection/mask-rcnn_r50_fpn-carafe_1x_coco.py',
    'configs/segmentation/upernet_r50_4xb4-80k_ade20k-512x512.py',
    'configs/segmentation/upernet_r50-carafe_4xb4-160k_ade20k-512x512.py',
]


@pytest.mark.parametrize('config', PAPER_CONFIGS)
def test_paper_configs_use_the_checked_datasets(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    expected = ('CheckedCocoDataset'
                if 'detection' in config else 'CheckedADE20KDataset')
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.type == expected


def test_paper_coco_config_names_the_annotation_file(coco):
    ann_file = osp.join(coco, 'annotations', 'instances_train.json')
    data = read_json(ann_file)
    del data['images']
    write_json(ann_file, data)
    with pytest.raises(ValueError, match=f'{re.escape(ann_file)}: .*images'):
        build(
            PAPER_CONFIGS[1],
            'train',
            data_root=coco + '/',
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'))


def test_paper_ade20k_config_names_the_label_file(ade):
    plant_ade_faults(ade)
    ann = osp.join(ade, 'annotations', 'training')
    dataset = build(PAPER_CONFIGS[3], 'train', data_root=ade + '/')
    types = [type(t).__name__ for t in dataset.pipeline.transforms]
    assert types[1:3] == ['LoadAnnotations', 'CheckSegMap'], types
    assert types.count('CheckSegMap') == 1
    by_name = {
        osp.basename(dataset.get_data_info(i)['seg_map_path']): i
        for i in range(len(dataset))
    }
    with pytest.raises(
            ValueError,
            match=f'{re.escape(osp.join(ann, "toy_000000.png"))} is 96x80'):
        dataset[by_name['toy_000000.png']]
    with pytest.raises(
            ValueError,
            match=r'has label values 198 after reduce_zero_label, outside '
            r'the 150 classes \[0, 150\)'):
        dataset[by_name['toy_000002.png']]
    assert dataset[by_name['toy_000006.png']]['inputs'].shape[0] == 3
