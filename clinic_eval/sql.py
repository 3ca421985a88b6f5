"""Written SQL for the few reads every rating request makes, with model instances built as the
ORM builds them.

Building a query costs Django several times what PostgreSQL spends answering it (for a
three-table ``select_related`` lookup, 2 ms against 0.4 ms here), and the rater's loop makes a
handful per request. The hot reads (``access.assignment_get_for_rater``,
``rating.selectors.rating_item``) are therefore written once as SQL: column lists and table
names come from the models, values are always parameters, and every column passes through the
converters the ORM would apply (JSON decoding; SQLite's dates), so a model loaded here is the
one ``QuerySet.get`` returns. The SQL is plain enough for both PostgreSQL and SQLite (the demo).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)
Converter = Callable[[Any, Any, Any], Any]


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[Model], name: str, alias: str = "") -> str:
    """``alias."column"`` (or ``"column"``) for the model field ``name`` (``study`` gives
    ``study_id``)."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field) and field.column, f"{model.__name__}.{name} has no column"
    quoted = connection.ops.quote_name(field.column)
    return f"{alias}.{quoted}" if alias else quoted


def columns(model: type[Model], alias: str = "") -> str:
    """Every concrete column of ``model`` (under ``alias``, if given), in the order ``load``
    reads them."""
    quote = connection.ops.quote_name
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{quote(f.column)}" for f in model._meta.concrete_fields)


def placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any]) -> int:
    """Runs a write; returns the number of rows it touched."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _insert_statement(instances: Sequence[Model]) -> tuple[str, list[Any]]:
    """One INSERT of unsaved instances of one model, their values prepared as the ORM
    prepares them (defaults from the constructor, ``auto_now`` stamps, JSON adapted)."""
    model = type(instances[0])
    fields = [f for f in model._meta.concrete_fields if f is not model._meta.auto_field]
    quote = connection.ops.quote_name
    row = f"({placeholders(len(fields))})"
    params = [
        f.get_db_prep_save(f.pre_save(instance, add=True), connection)
        for instance in instances
        for f in fields
    ]
    statement = (
        f"INSERT INTO {table(model)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES {', '.join([row] * len(instances))}"
    )
    return statement, params


def insert(instances: Sequence[Model]) -> None:
    """Inserts unsaved instances of one model in one statement, as ``bulk_create`` would;
    the instances do not learn their primary keys."""
    if instances:
        execute(*_insert_statement(instances))


def create(instance: M) -> M:
    """Inserts one unsaved instance, as ``QuerySet.create`` would, and gives it its primary
    key. A constraint it breaks raises Django's ``IntegrityError``, as there."""
    statement, params = _insert_statement([instance])
    meta = type(instance)._meta
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert:
            cursor.execute(
                f"{statement} RETURNING {connection.ops.quote_name(meta.pk.column)}", params
            )
            instance.pk = cursor.fetchone()[0]
        else:
            cursor.execute(statement, params)
            instance.pk = connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)
    instance._state.adding, instance._state.db = False, connection.alias
    return instance


@cache
def _pipeline(field: Field, vendor: str) -> tuple[Any, tuple[Converter, ...]]:
    # The ORM's own pipeline for one column: the backend's converters, then the field's.
    expression = field.get_col(field.model._meta.db_table)
    converters = [*connection.ops.get_db_converters(expression)]
    converters += field.get_db_converters(connection)  # type: ignore[attr-defined]
    return expression, tuple(converters)


@cache
def _model_pipeline(
    model: type[Model], vendor: str
) -> tuple[list[str], list[tuple[int, Any, tuple[Converter, ...]]]]:
    """The model's attribute names in column order, and the columns that need converting."""
    fields = model._meta.concrete_fields
    converting = []
    for index, field in enumerate(fields):
        expression, converters = _pipeline(field, vendor)
        if converters:
            converting.append((index, expression, converters))
    return [f.attname for f in fields], converting


def load(model: type[M], row: Sequence[Any], start: int = 0) -> tuple[M, int]:
    """The instance in ``row`` from ``start`` (columns as ``columns`` lists them), and where
    the next model's columns begin."""
    names, converting = _model_pipeline(model, connection.vendor)
    end = start + len(names)
    values = list(row[start:end])
    for index, expression, converters in converting:
        value = values[index]
        for convert in converters:
            value = convert(value, expression, connection)
        values[index] = value
    return model.from_db(connection.alias, names, values), end
