# 600-iteration CamVid budget (deeplabv3plus_r18-d16_600it_camvid.py) with LVIS repeat factor
# sampling, t = 1.0, over the classes present in each label map (image frequencies: Fence 0.47,
# Bicyclist 0.55, the others 0.86-1.0), so images with a fence or a bicyclist are drawn up to
# ~1.4x as often. Same 600 iterations.
_base_ = ['deeplabv3plus_r18-d16_600it_camvid.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='RepeatFactorSampler', repeat_thr=1.0,
                                     infinite=True))
