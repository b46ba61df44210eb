# Long-tail variant of the 12-epoch BCCD budget (issue 13): LVIS repeat factor sampling
# (toolbox/datasets/samplers.py) with t = 1.0: r_c = max(1, sqrt(t / f_c)) from the image
# frequencies (RBC 0.96, WBC 1.00, Platelets 0.57), so images with platelets are drawn ~1.3x as
# often as the others. The epoch keeps 205 draws (the plain epoch), so the iteration budget is
# the baseline's; only which images are drawn changes.
_base_ = ['./retinanet_r18_fpn_320_12e_bccd.py']
train_dataloader = dict(sampler=dict(_delete_=True, type='RepeatFactorSampler', repeat_thr=1.0,
                                     epoch_length=205))
