"""Admins: diplomatic representatives. Add, edit, delete (after a confirm page that
needs no JavaScript), import a CSV file, and see the countries supporters write from
where none is on file. The rules are :mod:`campaign.diplomats`'."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response
from wtforms import SelectField, SubmitField
from wtforms.validators import DataRequired

from .. import audit
from .. import diplomats as service
from ..db import db
from ..exceptions import InvalidInput
from ..forms import DeleteForm, DiplomatForm
from ..intake import countries, country_name
from ..models import Diplomat, Role
from ..users import role_required
from .admin import bp

FIELDS = ("country", "name", "email", "fax", "postal_address")


class DiplomatEntryForm(DiplomatForm):
    """No country is chosen for the admin: the list starts empty, and one must be picked."""

    country = SelectField(
        _l("Accredited to (supporter country)"),
        choices=[],
        validators=[DataRequired(message=_l("Choose the country they are accredited to."))],
    )
    save = SubmitField(_l("Save changes"))

    def fill_countries(self) -> None:
        self.country.choices = [("", _("Choose a country…")), *countries()]


class ImportForm(FlaskForm):
    file = FileField(
        _l("CSV file (UTF-8; at most 64 KB)"),
        validators=[FileRequired(message=_l("Choose a CSV file."))],
    )
    upload = SubmitField(_l("Import"))


def _checked(form: DiplomatEntryForm) -> dict[str, str | None] | None:
    """The form's values through the same rules as an import; errors onto the form."""
    try:
        return service.check(*(getattr(form, f).data for f in FIELDS))
    except InvalidInput as e:
        for key, message in e.fields.items():
            getattr(form, key).errors = [message]
        return None


def _list_page(
    form: DiplomatEntryForm, import_form: ImportForm | None = None, report: object = None
) -> str:
    rows = db.session.scalars(db.select(Diplomat).order_by(Diplomat.country, Diplomat.name)).all()
    return render_template(
        "admin/diplomats.html",
        form=form,
        import_form=import_form or ImportForm(formdata=None),
        report=report,
        rows=rows,
        states=service.target_states(),
        missing=service.missing_countries(),
        country_name=country_name,
    )


@bp.route("/diplomats", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def diplomats() -> str | Response | tuple[str, int]:
    states = service.target_states()
    form = DiplomatEntryForm()
    form.fill_countries()
    if request.method == "GET" and request.args.get("country", "").upper() in dict(countries()):
        form.country.data = request.args["country"].upper()  # from the missing-countries list
    if not form.validate_on_submit():
        return _list_page(form), 422 if form.is_submitted() else 200
    clean = _checked(form)
    if clean is None:
        return _list_page(form), 422
    try:
        for state in states:
            db.session.add(Diplomat(target_state=state, **clean))
        audit.record("diplomat added", f"{clean['name']} ({clean['country']})")
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        form.name.errors = [_("This representative is listed already for this country.")]
        return _list_page(form), 422
    flash(
        _(
            "Added %(name)s for %(country)s.",
            name=clean["name"],
            country=country_name(clean["country"] or ""),
        ),
        "ok",
    )
    return redirect(url_for("admin.diplomats"))


@bp.route("/diplomats/<int:diplomat_id>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def diplomat_edit(diplomat_id: int) -> str | Response | tuple[str, int]:
    row = db.session.get(Diplomat, diplomat_id)
    if row is None:
        flash(_("That representative is no longer on file."), "error")
        return redirect(url_for("admin.diplomats"))
    form = DiplomatEntryForm(obj=row)
    form.fill_countries()
    code = 200
    if form.validate_on_submit():
        clean = _checked(form)
        if clean is not None:
            before = f"{row.name} ({row.country})"
            for key, value in clean.items():
                setattr(row, key, value)
            try:
                audit.record("diplomat edited", f"{before} → {row.name} ({row.country})")
                db.session.commit()
            except IntegrityError:
                db.session.rollback()
                form.name.errors = [_("This representative is listed already for this country.")]
            else:
                flash(_("Saved %(name)s.", name=row.name), "ok")
                return redirect(url_for("admin.diplomats"))
        code = 422
    elif form.is_submitted():
        code = 422
    return render_template("admin/diplomat.html", form=form, row=row), code


@bp.route("/diplomats/<int:diplomat_id>/delete", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def diplomat_delete(diplomat_id: int) -> str | Response:
    """GET asks (a page of its own, no JavaScript needed); POST deletes."""
    row = db.session.get(Diplomat, diplomat_id)
    if row is None:
        flash(_("That representative is no longer on file."), "error")
        return redirect(url_for("admin.diplomats"))
    form = DeleteForm()
    if request.method == "GET" or not form.validate_on_submit():
        return render_template(
            "admin/diplomat_delete.html", row=row, form=form, country_name=country_name
        )
    name, country = row.name, row.country
    audit.record("diplomat deleted", f"{name} ({country})")
    db.session.delete(row)
    db.session.commit()
    flash(_("Deleted %(name)s.", name=name), "ok")
    return redirect(url_for("admin.diplomats"))


@bp.post("/diplomats/import")
@role_required(Role.ADMIN)
def diplomats_import() -> tuple[str, int]:
    form = DiplomatEntryForm(formdata=None)
    form.fill_countries()
    import_form = ImportForm()
    if not import_form.validate_on_submit():
        return _list_page(form, import_form), 422
    report = service.import_csv(import_form.file.data.read())
    if report.accepted:
        audit.record(
            "diplomats imported", f"{len(report.accepted)} added, {len(report.refused)} refused"
        )
        db.session.commit()
    else:
        db.session.rollback()
    code = 422 if report.problem and not report.accepted else 200
    return _list_page(form, ImportForm(formdata=None), report), code
