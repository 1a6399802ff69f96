-- Demo ERP schema: what a small ERP's sales module looks like.
-- Loaded by dev/stack.sh into database `erp` on the local stack (idempotent).
-- Captured tables use REPLICA IDENTITY FULL so Debezium sends `before` images:
-- syncd must see a status *transition* (DRAFT -> CONFIRMED), not only the new value.

CREATE SCHEMA IF NOT EXISTS erp;

DO $$ BEGIN
    CREATE TYPE erp.order_status AS ENUM ('DRAFT', 'CONFIRMED', 'SHIPPED', 'CANCELLED', 'CLOSED');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS erp.customer (
    id              bigserial PRIMARY KEY,
    code            varchar(32)  NOT NULL UNIQUE,
    name            varchar(200) NOT NULL,
    tax_id          varchar(20),            -- unified social credit code (18 chars)
    address         varchar(200),
    phone           varchar(40),
    bank_name       varchar(100),
    bank_account    varchar(40),
    email           varchar(200),
    is_natural_person boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamp   NOT NULL DEFAULT localtimestamp
);

CREATE TABLE IF NOT EXISTS erp.sales_order (
    id              bigserial PRIMARY KEY,
    order_no        varchar(32)  NOT NULL UNIQUE,
    customer_id     bigint       REFERENCES erp.customer(id),
    status          erp.order_status NOT NULL DEFAULT 'DRAFT',
    order_date      date         NOT NULL DEFAULT current_date,
    currency        char(3)      NOT NULL DEFAULT 'CNY',
    invoice_type    varchar(10)  NOT NULL DEFAULT 'ORDINARY',  -- SPECIAL | ORDINARY
    price_includes_tax boolean   NOT NULL DEFAULT false,
    -- buyer data as printed on the invoice (copied from the customer at order time)
    buyer_name      varchar(200) NOT NULL,
    buyer_tax_id    varchar(20),
    buyer_address   varchar(200),
    buyer_phone     varchar(40),
    buyer_bank_name varchar(100),
    buyer_bank_account varchar(40),
    buyer_email     varchar(200),
    total_amount    numeric(18,2) NOT NULL DEFAULT 0,
    remark          text,
    cancel_reason   varchar(40),
    created_at      timestamptz  NOT NULL DEFAULT now(),
    updated_at      timestamp    NOT NULL DEFAULT localtimestamp,
    -- write-back columns, owned by syncd
    invoice_no      varchar(20),
    invoice_status  varchar(20),
    invoice_error   text,
    invoiced_at     timestamptz,
    invoice_url     varchar(500),
    red_invoice_no  varchar(20)
);

CREATE TABLE IF NOT EXISTS erp.sales_order_line (
    id              bigserial PRIMARY KEY,
    order_id        bigint       NOT NULL REFERENCES erp.sales_order(id) ON DELETE CASCADE,
    line_no         integer      NOT NULL,
    item_name       varchar(100) NOT NULL,
    tax_code        char(19)     NOT NULL,      -- 19-digit tax classification code
    spec            varchar(40),
    unit            varchar(20),
    quantity        numeric(20,8) NOT NULL,
    unit_price      numeric(20,8) NOT NULL,
    tax_rate        numeric(5,4)  NOT NULL,     -- 0.1300 = 13 %
    discount_amount numeric(18,2) NOT NULL DEFAULT 0,
    amount          numeric(18,2) NOT NULL,     -- quantity x unit_price, rounded
    UNIQUE (order_id, line_no)
);

CREATE INDEX IF NOT EXISTS sales_order_line_order_idx ON erp.sales_order_line (order_id);

-- Returns: each row returns `quantity` units of one line of an order's invoice. syncd
-- issues a partial red invoice for it once `status` becomes CONFIRMED (documents.
-- sales_order.returns in the config) and writes the red number back here.
CREATE TABLE IF NOT EXISTS erp.sales_return_line (
    id              bigserial PRIMARY KEY,
    order_id        bigint        NOT NULL REFERENCES erp.sales_order(id),
    line_no         integer       NOT NULL,     -- the order line returned (its line_no)
    quantity        numeric(20,8) NOT NULL,     -- units returned (positive)
    reason          varchar(40),                -- RETURN | ALLOWANCE | ...
    status          varchar(20)   NOT NULL DEFAULT 'DRAFT',  -- DRAFT | CONFIRMED
    created_at      timestamptz   NOT NULL DEFAULT now(),
    -- write-back columns, owned by syncd
    red_invoice_no  varchar(20),
    invoice_status  varchar(20),
    invoice_error   text
);

CREATE INDEX IF NOT EXISTS sales_return_line_order_idx ON erp.sales_return_line (order_id);

ALTER TABLE erp.customer REPLICA IDENTITY FULL;
ALTER TABLE erp.sales_order REPLICA IDENTITY FULL;
ALTER TABLE erp.sales_order_line REPLICA IDENTITY FULL;
ALTER TABLE erp.sales_return_line REPLICA IDENTITY FULL;
