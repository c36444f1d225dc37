-- The WhatsApp Cloud API surface (/{version}/{phone-number-id}/media).

-- Which app a phone-number id's requests belong to. A phone-number id maps
-- to one app at most, across all apps. Deleting an app removes its rows at
-- once (so the number may be mapped again); the cascade covers the app row's
-- own removal by the reaper.
CREATE TABLE whatsapp_phone_numbers (
    phone_number_id TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    created_at      INTEGER NOT NULL
);
CREATE INDEX whatsapp_phone_numbers_app_id ON whatsapp_phone_numbers (app_id);

-- The types the surface accepts from an app and the largest file of each: a
-- JSON object {"type/subtype": bytes, ...} in the order error messages list
-- them. NULL: Meta's list and limits.
ALTER TABLE apps ADD COLUMN wa_type_limits TEXT;
