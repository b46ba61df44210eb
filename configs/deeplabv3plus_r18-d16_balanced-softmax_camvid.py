# The CamVid recipe with Balanced Softmax (Ren et al. 2020, ANCHORS.md 4.3) in place of
# cross-entropy: training adds log(pixel frequency of each class) to the logits, inference uses
# the plain logits. ClassCountsHook hands the training set's pixel counts to the loss before
# the first iteration. Not yet trained here: its numbers will be recorded with the long-tail
# work; everything else is the CE recipe.
_base_ = ['deeplabv3plus_r18-d16_camvid.py']
model = dict(decode_head=dict(loss_decode=dict(type='BalancedSoftmaxLoss',
                                               count_key='pixel_counts')))
custom_hooks = [dict(type='ClassCountsHook')]
