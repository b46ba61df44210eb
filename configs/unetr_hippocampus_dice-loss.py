# Loss ablation of unetr_hippocampus.py: soft Dice alone (MONAI's DiceLoss, softmax, background
# included) instead of Dice + cross-entropy; everything else, seed included, is the same.
_base_ = ['unetr_hippocampus.py']
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='DiceLoss')))
