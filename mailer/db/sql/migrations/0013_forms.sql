-- Consent intake (issue 17): sign-up forms, their versioned consent texts,
-- and pending double opt-in requests.
--
-- A form is data (slug, the ledger source, topics, languages, opt-in mode);
-- the sentence shown beside its checkbox is a row of form_texts per language
-- and version, never edited: the ledger's evidence names (form, version,
-- sha256), so "the exact words the person agreed to" stays provable after
-- the operator rewords the form (CASL s.10(1), GDPR art. 7(1)).
--
-- A pending request is not a consent. It holds the personal data of the
-- request step until confirmed or expired; expiry deletes the row (GDPR
-- art. 5(1)(e), storage limitation). A confirmed row keeps only the address
-- hash and its times, for the per-address mail limit, and goes at expiry too.

CREATE TABLE forms (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug           text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    -- The ledger's source of every grant the form records ("Site web — infolettre").
    source         text NOT NULL CHECK (source <> ''),
    topic_ids      bigint[] NOT NULL DEFAULT '{}',
    locales        text[] NOT NULL CHECK (cardinality(locales) > 0),
    double_opt_in  boolean NOT NULL DEFAULT true,
    welcome        text,
    redirect_url   text,
    -- Sites whose pages may post the embedded form (scheme://host[:port]).
    origins        text[] NOT NULL DEFAULT '{}',
    proof_of_work  boolean NOT NULL DEFAULT false,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- Ledger evidence names forms by id and slug: a form is disabled, never deleted.
CREATE TRIGGER forms_no_delete BEFORE DELETE ON forms
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();

CREATE TABLE form_texts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    form_id    bigint NOT NULL REFERENCES forms (id),
    locale     text NOT NULL,
    version    integer NOT NULL CHECK (version > 0),
    text       text NOT NULL CHECK (text <> ''),
    sha256     bytea NOT NULL CHECK (length(sha256) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (form_id, locale, version)
);

-- A recorded wording is never changed: editing adds a version.
CREATE FUNCTION form_texts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'consent texts are versioned, never changed (% refused)', TG_OP;
END $$;
CREATE TRIGGER form_texts_append_only BEFORE UPDATE OR DELETE ON form_texts
    FOR EACH ROW EXECUTE FUNCTION form_texts_append_only();

CREATE TABLE signup_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    form_id      bigint NOT NULL,
    text_id      bigint NOT NULL,
    email_hash   bytea NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed')),
    -- Personal data of the request step; NULL once confirmed (the ledger has it).
    email        text,
    name         text,
    locale       text,
    topic_ids    bigint[] NOT NULL DEFAULT '{}',
    evidence     jsonb,
    mailed       boolean NOT NULL DEFAULT false,
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    confirmed_at timestamptz,
    CHECK ((state = 'pending') = (email IS NOT NULL))
);
-- The per-address mail limit: "a mail to this address in the last 24 h?"
CREATE INDEX signup_requests_hash_idx ON signup_requests (email_hash, requested_at);
-- The expiry sweep.
CREATE INDEX signup_requests_expiry_idx ON signup_requests (expires_at);
