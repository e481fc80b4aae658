"""The one error type for bad user input: the CLI prints it as one line and exits with status 2."""

from __future__ import annotations


class InputError(Exception):
    """Bad input, reported as ``<where>: <field> = <value>: <problem>`` on one line."""

    def __init__(self, where: str, field: str, value: object, problem: str):
        self.where, self.field, self.value, self.problem = str(where), field, value, problem
        shown = repr(value) if not isinstance(value, str) or len(value) < 120 else repr(value[:117] + "...")
        super().__init__(f"{self.where}: {field} = {shown}: {problem}")
