"""EverySkill data layer."""
