from django.core.management.base import BaseCommand

from labeling.services.demo import demo_seed


class Command(BaseCommand):
    help = "Create the demo admin and annotators (printing fresh passwords) and load the demo project."

    def handle(self, *args, **options):
        credentials = demo_seed()
        self.stdout.write("Demo users (passwords are shown once; run seed_demo again for new ones):")
        for username, password in credentials.items():
            self.stdout.write(f"  {username:<12} {password}")
