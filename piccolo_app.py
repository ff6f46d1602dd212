"""
The EverySkill Piccolo app: its tables, migrations and commands
(``piccolo everyskill sample_data`` loads the sample data;
``piccolo everyskill create_api_key`` and ``revoke_api_key`` manage the HTTP
API's keys, see ``everyskill.api_keys``; ``piccolo everyskill run_benchmark``
runs a skill against models, see ``everyskill.benchmark_command``).
"""

import os

from piccolo.conf.apps import AppConfig, Command

from everyskill.api_keys import create_api_key_command, revoke_api_key_command
from everyskill.benchmark_command import run_benchmark_command
from everyskill.sample_data import sample_data

from tables import STAFF_TABLES, TABLES

CURRENT_DIRECTORY = os.path.dirname(os.path.abspath(__file__))


APP_CONFIG = AppConfig(
    app_name="everyskill",
    migrations_folder_path=os.path.join(CURRENT_DIRECTORY, "piccolo_migrations"),
    table_classes=[*TABLES, *STAFF_TABLES],
    migration_dependencies=[],
    commands=[
        Command(sample_data),
        Command(create_api_key_command, command_name="create_api_key"),
        Command(revoke_api_key_command, command_name="revoke_api_key"),
        Command(run_benchmark_command, command_name="run_benchmark"),
    ],
)
