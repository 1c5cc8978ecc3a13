"""The HTML snippet `mailer forms embed` prints, for a page on another site.

The snippet is a plain HTML form posting to the tracker's /s/SLUG, plus a few lines of script
that fetch /s/SLUG/token when the page loads: the signed, time-limited form token (the CSRF
field), the current consent text in the page's language (so the sentence shown is the one
recorded, even after the operator rewords it: the POST names the text's id) and, for forms
with proof-of-work, an ALTCHA challenge the script solves before sending. The tracker answers
that fetch with CORS headers only for the form's --origin sites, and accepts a cross-site POST
only from them (Origin / Sec-Fetch-Site); see README "Sign-up forms".
"""

from __future__ import annotations

from html import escape

from mailer.core.settings import FormsSettings
from mailer.forms.abuse import HONEYPOT_FIELD, POW_FIELD
from mailer.forms.model import Form
from mailer.forms.wording import TEXT, language

# Solves an ALTCHA v1 challenge: SHA-256(salt + n) == challenge for n in 0..maxNumber.
SOLVER_JS = """
async function mailerSolve(c){const e=new TextEncoder();
for(let n=0;n<=c.maxNumber;n++){const h=await crypto.subtle.digest('SHA-256',e.encode(c.salt+n));
const x=Array.from(new Uint8Array(h)).map(b=>b.toString(16).padStart(2,'0')).join('');
if(x===c.challenge){return btoa(JSON.stringify({algorithm:c.algorithm,challenge:c.challenge,
number:n,salt:c.salt,signature:c.signature}));}}return '';}
""".strip()


def snippet(form: Form, lang: str, base_url: str, settings: FormsSettings) -> str:
    """The HTML to paste into another site's page."""
    words = TEXT[language(lang)]
    base = base_url.rstrip("/")
    slug = escape(form.slug)
    text = form.texts[lang]
    topics = "".join(
        f'\n    <label><input type="checkbox" name="topic" value="{escape(t.slug)}"> '
        f"{escape(t.label(lang))}</label>"
        for t in form.topics
    )
    topic_block = (
        f"\n  <fieldset>\n    <legend>{escape(words['topics_legend'])}</legend>{topics}\n"
        "  </fieldset>"
        if form.topics
        else ""
    )
    pow_field = (
        f'\n  <input type="hidden" name="{POW_FIELD}" value="">' if form.proof_of_work else ""
    )
    pow_js = (
        f"""
  {SOLVER_JS}
  f.addEventListener('submit',async function(ev){{if(f.{POW_FIELD}.value)return;ev.preventDefault();
    f.{POW_FIELD}.value=await mailerSolve(d.pow);f.submit();}});"""
        if form.proof_of_work
        else ""
    )
    identity = words["identity"].format(
        business=settings.business_name, address=settings.postal_address, contact=settings.contact
    )
    # Long lines below are HTML the operator pastes; wrapping them would only add blanks.
    return f"""<!-- Sign-up form "{slug}" ({escape(form.source)}), served by {escape(base)} -->
<form method="post" action="{escape(base)}/s/{slug}" accept-charset="utf-8"
      id="mailer-form-{slug}" lang="{lang}">
  <input type="hidden" name="form_token" value="">
  <input type="hidden" name="text_id" value="{text.id}">
  <input type="hidden" name="locale" value="{lang}">
  <input type="hidden" name="page_url" value="">{pow_field}
  <label>{escape(words["email_label"])}
    <input type="email" name="email" required autocomplete="email"></label>
  <label>{escape(words["name_label"])}
    <input type="text" name="name" autocomplete="name"></label>{topic_block}
  <label><input type="checkbox" name="consent" value="yes" required>
    <span class="mailer-consent-text">{escape(text.text)}</span></label>
  <div aria-hidden="true" style="position:absolute;left:-10000px">
    <label>Website
      <input type="text" name="{HONEYPOT_FIELD}" tabindex="-1" autocomplete="off"></label>
  </div>
  <p>{escape(words["withdraw_note"])}</p>
  <p><small>{escape(identity)}</small></p>
  <button type="submit">{escape(words["submit"])}</button>
</form>
<script>
(function(){{
  var f=document.getElementById('mailer-form-{slug}');
  f.page_url.value=location.href;
  fetch('{escape(base)}/s/{slug}/token?locale={lang}',{{credentials:'omit'}})
    .then(function(r){{return r.json();}}).then(function(d){{
      f.form_token.value=d.token;
      f.text_id.value=d.text.id;
      f.querySelector('.mailer-consent-text').textContent=d.text.text;{pow_js}
    }});
}})();
</script>"""
