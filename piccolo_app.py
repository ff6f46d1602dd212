"""
The EverySkill Piccolo app: its tables, migrations and commands
(``piccolo everyskill sample_data`` loads the sample data).
"""

import os

from piccolo.conf.apps import AppConfig, Command

from everyskill.sample_data import sample_data

from tables import TABLES

CURRENT_DIRECTORY = os.path.dirname(os.path.abspath(__file__))


APP_CONFIG = AppConfig(
    app_name="everyskill",
    migrations_folder_path=os.path.join(CURRENT_DIRECTORY, "piccolo_migrations"),
    table_classes=list(TABLES),
    migration_dependencies=[],
    commands=[Command(sample_data)],
)
