# 600-iteration CamVid budget (deeplabv3plus_r18-d16_600it_camvid.py) with the Class
# Rectification Loss (plugins/losses/long_tail.py): (1 - alpha) CE + alpha L_crl, the minority
# classes profiled per batch of pixels (rho 0.5), 25 hard positive / negative pixels per
# minority class, triplet margin 0.5, alpha = eta * batch imbalance with eta 0.3 (the paper's
# value is unverified, ANCHORS.md 4.5; 0.01 would leave the CE recipe practically unchanged).
_base_ = ['deeplabv3plus_r18-d16_600it_camvid.py']
model = dict(decode_head=dict(loss_decode=dict(
    _delete_=True, type='ClassRectificationLoss', rho=0.5, k=25, margin=0.5, eta=0.3,
    loss_name='loss_ce')))
