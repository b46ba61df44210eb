"""The embedded demo dataset: coloured shapes on textured backgrounds, generated here.

Deterministic (one seed, no download), written in both real COCO json and Pascal VOC layouts so
that a new user's first command trains and evaluates a detector within minutes on a CPU::

    <root>/
      coco/annotations/instances_{train,val}.json   coco/{train,val}/*.jpg
      voc/Annotations/*.xml  voc/JPEGImages/*.jpg  voc/ImageSets/Main/{train,val}.txt

Classes: circle, square, triangle. Shapes overlap at most a little, span 14 to 60 pixels and
sit on a smooth random background with noise, so the task is learnable but not trivial.
"""
from __future__ import annotations

import json
import os
import os.path as osp

import cv2
import numpy as np

from toolbox.structures import box_areas, xyxy_to_xywh

DEMO_CLASSES = ('circle', 'square', 'triangle')


def _background(rng: np.random.RandomState, size: int) -> np.ndarray:
    low = rng.randint(0, 256, size=(4, 4, 3)).astype(np.uint8)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    img += rng.normal(0, 12, size=img.shape)
    return np.clip(img, 0, 255)


def _draw_shape(img, rng, label, box):
    x1, y1, x2, y2 = box
    colour = tuple(int(c) for c in rng.randint(0, 256, size=3))
    if label == 0:
        centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        cv2.ellipse(img, centre, ((x2 - x1) // 2, (y2 - y1) // 2), 0, 0, 360, colour, -1)
    elif label == 1:
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
    else:
        pts = np.array([[(x1 + x2) // 2, y1], [x1, y2 - 1], [x2 - 1, y2 - 1]], np.int32)
        cv2.fillPoly(img, [pts], colour)


def _sample_image(rng, size, max_objects):
    img = _background(rng, size)
    boxes, labels = [], []
    for _ in range(rng.randint(1, max_objects + 1)):
        for _attempt in range(20):
            side = rng.randint(14, 61)
            aspect = rng.uniform(0.7, 1.4)
            w, h = int(side * aspect ** 0.5), int(side / aspect ** 0.5)
            if w >= size or h >= size:
                continue
            x1, y1 = rng.randint(0, size - w), rng.randint(0, size - h)
            box = np.array([x1, y1, x1 + w, y1 + h])
            if boxes:
                others = np.array(boxes)
                ix = np.clip(np.minimum(others[:, 2], box[2]) - np.maximum(others[:, 0], box[0]),
                             0, None)
                iy = np.clip(np.minimum(others[:, 3], box[3]) - np.maximum(others[:, 1], box[1]),
                             0, None)
                if (ix * iy).max() > 0.15 * w * h:
                    continue
            label = rng.randint(len(DEMO_CLASSES))
            _draw_shape(img, rng, label, box.tolist())
            boxes.append(box.tolist())
            labels.append(int(label))
            break
    return np.clip(img, 0, 255).astype(np.uint8), boxes, labels


def _voc_xml(name, size, boxes, labels):
    objects = ''.join(
        f'<object><name>{DEMO_CLASSES[lab]}</name><difficult>0</difficult><bndbox>'
        f'<xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax>'
        f'</bndbox></object>' for b, lab in zip(boxes, labels))
    return (f'<annotation><filename>{name}.jpg</filename><size><width>{size}</width>'
            f'<height>{size}</height><depth>3</depth></size>{objects}</annotation>\n')


def make_demo_dataset(root: str, num_train: int = 240, num_val: int = 60, img_size: int = 160,
                      max_objects: int = 5, seed: int = 0) -> str:
    """Write the demo dataset under ``root`` (skipped if it is already complete).

    Returns ``root``. The same arguments always produce the same annotations (images are
    JPEG quality 95 of the same pixels).
    """
    done_marker = osp.join(root, '.complete')
    if osp.exists(done_marker):
        return root
    rng = np.random.RandomState(seed)
    for sub in ('coco/annotations', 'coco/train', 'coco/val', 'voc/Annotations',
                'voc/JPEGImages', 'voc/ImageSets/Main'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    categories = [dict(id=k + 1, name=n, supercategory='shape') for k, n in enumerate(DEMO_CLASSES)]
    ann_id = 1
    for split, count in (('train', num_train), ('val', num_val)):
        images, annotations, names = [], [], []
        for k in range(count):
            img, boxes, labels = _sample_image(rng, img_size, max_objects)
            name = f'{split}_{k:05d}'
            names.append(name)
            for path in (osp.join(root, 'coco', split, f'{name}.jpg'),
                         osp.join(root, 'voc', 'JPEGImages', f'{name}.jpg')):
                cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            image_id = len(images) + 1
            images.append(dict(id=image_id, file_name=f'{name}.jpg', width=img_size,
                               height=img_size))
            xyxy = np.array(boxes, np.float64).reshape(-1, 4)
            for box, area, label in zip(xyxy_to_xywh(xyxy).tolist(), box_areas(xyxy).tolist(),
                                        labels):
                annotations.append(dict(id=ann_id, image_id=image_id, category_id=label + 1,
                                        bbox=box, area=area, iscrowd=0))
                ann_id += 1
            with open(osp.join(root, 'voc', 'Annotations', f'{name}.xml'), 'w') as f:
                f.write(_voc_xml(name, img_size, boxes, labels))
        with open(osp.join(root, 'coco', 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)
        with open(osp.join(root, 'voc', 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')
    open(done_marker, 'w').close()
    return root
