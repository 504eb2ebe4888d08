"""A small study pool built once per test session with the `test` preset (1 s clips), copied per test."""

import os
import shutil

from videossm.study import StudyConfig, SystemSpec

SYSTEM_SPECS = ("zqhybrid=test:hybrid", "zqsink=test:sink", "zqwindow=test:window")
SYSTEM_NAMES = [s.split("=")[0] for s in SYSTEM_SPECS]
PROMPTS = ("a red circle moving right on a gray background", "a blue square moving left on a gray background")


def build_template(root: str, items: int = 2) -> str:
    from videossm.pipeline import VideoSSMPipeline
    from videossm.study import Study

    config = StudyConfig(root=root, systems=tuple(SystemSpec.parse(s) for s in SYSTEM_SPECS), scripts=PROMPTS,
                         seconds=1.0, videos_per_comparison=3, attention_check_rate=0.5)  # 0.5: build broken clips
    config.save()
    study = Study(config, hub=False)
    study.set_admin_token("admin-token-for-tests")
    pipe = VideoSSMPipeline.from_pretrained("test", device="cpu")
    study.pool.build(items, pipelines={"test": pipe}, progress=False)
    study.close()
    config.replace(attention_check_rate=0.0).save()  # tests turn attention checks on where they need them
    return root


def copy_study(template: str, dest: str, **config_changes) -> str:
    shutil.copytree(template, dest)
    os.remove(os.path.join(dest, "secret.key"))  # each copy signs with its own secret
    if config_changes:
        config = StudyConfig.load(dest).replace(**config_changes)
        config.save()
    return dest


ADMIN = "admin-token-for-tests"
__all__ = ["ADMIN", "PROMPTS", "SYSTEM_NAMES", "build_template", "copy_study", "os"]
