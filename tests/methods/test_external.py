"""The lazy registration of the external methods: same names as the modules, no torch on listing."""

import subprocess
import sys

from pipeline.methods import cam, captum_methods, excitation, external


def test_the_lazy_lists_are_the_modules_tables():
    assert external.CAPTUM == tuple(captum_methods.MEMBERS)
    assert external.CAM == tuple(cam.MEMBERS)
    assert external.EXCITATION == tuple(excitation.METHODS)


def test_listing_and_resolving_names_imports_torch_only_on_use():
    code = ("import sys\n"
            "from pipeline.methods import registry, external\n"
            "external.register_all()\n"
            "names = registry.method_names()\n"
            "assert 'captum:IntegratedGradients' in names and 'cam:ScoreCAM' in names and 'rise' in names, names\n"
            "assert 'excitation_backprop' in names\n"
            "assert 'torch' not in sys.modules\n"
            "assert registry.get_method('rise').options['num_cells'] == 7\n"
            "assert 'torch' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": ":".join(sys.path)})
