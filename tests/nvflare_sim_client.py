"""Client script of the NVFlare simulation test (tests/nvflare_sim_job.py): numpy only.

Each site pulls the model half way towards a target and reports 10 steps; the Byzantine site
(``--byzantine``) sends -100 times that update. ``--diff`` sends updates (``ParamsType.DIFF``)
instead of models.
"""

import argparse

import numpy as np
import nvflare.client as flare
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

TARGET = 2.0

parser = argparse.ArgumentParser()
parser.add_argument("--byzantine", default="")
parser.add_argument("--diff", action="store_true")
args = parser.parse_args()

flare.init()
site = flare.get_site_name()
while flare.is_running():
    received = flare.receive()
    params = {k: np.asarray(v) for k, v in received.params.items()}
    update = {k: (0.5 * (TARGET - v)).astype(v.dtype) for k, v in params.items()}
    if site == args.byzantine:
        update = {k: (-100 * u).astype(u.dtype) for k, u in update.items()}
    if args.diff:
        out = FLModel(params=update, params_type=ParamsType.DIFF)
    else:
        out = FLModel(params={k: params[k] + update[k] for k in params}, params_type=ParamsType.FULL)
    out.meta = {"NUM_STEPS_CURRENT_ROUND": 10}
    flare.send(out)
