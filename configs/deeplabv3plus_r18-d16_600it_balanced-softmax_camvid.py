# 600-iteration CamVid budget (deeplabv3plus_r18-d16_600it_camvid.py) with Balanced Softmax
# (pixel counts of the training set, ClassCountsHook) in place of cross-entropy.
_base_ = ['deeplabv3plus_r18-d16_600it_camvid.py']
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='BalancedSoftmaxLoss',
                                               count_key='pixel_counts')))
custom_hooks = [dict(type='ClassCountsHook')]
