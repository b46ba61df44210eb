# deeplabv3plus_r18-d16_rfs_camvid.py (repeat-factor sampling, best checkpoint kept) with the
# logit-adjusted loss at half strength (BalancedSoftmaxLoss tau 0.5: logits + 0.5 log(pixel
# prior) in training, plain logits at inference) in place of cross-entropy. At 600 iterations
# full Balanced Softmax (tau 1) was the only loss that found Pole / SignSymbol / Pedestrian /
# Bicyclist, but collapsed Building (README, long-tail table); repeat-factor sampling already
# over-samples the images of the rare classes, so the adjustment is halved. Same seed and
# budget as the two rows above it in the README: an ablation row.
# Measured (seed 0, 2 CPU cores, 14 min): val mIoU 38.55 / mAcc 55.99 / aAcc 75.90 (20.47 at
# 400 iterations, 27.91 at 800) against 35.66 / 46.69 / 80.14 with cross-entropy; SignSymbol
# 9.7, Fence 19.9, Pedestrian 12.5 IoU (all 0 with cross-entropy), Pavement 63.8 (55.2), at the
# cost of Building 51.6 (63.9) and Tree 59.2 (71.5); Pole and Bicyclist still 0.
_base_ = ['deeplabv3plus_r18-d16_rfs_camvid.py']
model = dict(decode_head=dict(loss_decode=dict(type='BalancedSoftmaxLoss',
                                               count_key='pixel_counts', tau=0.5)))
custom_hooks = [dict(type='ClassCountsHook')]
