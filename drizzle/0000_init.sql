CREATE TABLE `allowed` (
	`cidr` text PRIMARY KEY NOT NULL,
	`added_at` integer NOT NULL,
	`note` text DEFAULT '' NOT NULL
);
--> statement-breakpoint
CREATE TABLE `bans` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`address` text NOT NULL,
	`family` integer NOT NULL,
	`started_at` integer NOT NULL,
	`until` integer,
	`reason_kind` text NOT NULL,
	`reason_service` text DEFAULT '' NOT NULL,
	`reason_account` text DEFAULT '' NOT NULL,
	`failures` integer DEFAULT 0 NOT NULL,
	`source` text DEFAULT 'auto' NOT NULL,
	`lifted_at` integer,
	`lift_reason` text,
	FOREIGN KEY (`address`) REFERENCES `hosts`(`address`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `bans_active` ON `bans` (`lifted_at`,`until`);--> statement-breakpoint
CREATE INDEX `bans_address` ON `bans` (`address`);--> statement-breakpoint
CREATE TABLE `events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`address` text NOT NULL,
	`at` integer NOT NULL,
	`kind` text NOT NULL,
	`service` text NOT NULL,
	`transport` text,
	`account` text NOT NULL,
	FOREIGN KEY (`address`) REFERENCES `hosts`(`address`) ON UPDATE no action ON DELETE cascade
);
--> statement-breakpoint
CREATE INDEX `events_address` ON `events` (`address`,`id`);--> statement-breakpoint
CREATE TABLE `hosts` (
	`address` text PRIMARY KEY NOT NULL,
	`family` integer NOT NULL,
	`first_seen` integer NOT NULL,
	`last_seen` integer NOT NULL,
	`failures` integer DEFAULT 0 NOT NULL,
	`ban_count` integer DEFAULT 0 NOT NULL,
	`banned` integer DEFAULT false NOT NULL,
	`ban_until` integer,
	`last_kind` text,
	`last_service` text,
	`last_account` text
);
--> statement-breakpoint
CREATE INDEX `hosts_banned` ON `hosts` (`banned`);--> statement-breakpoint
CREATE INDEX `hosts_last_seen` ON `hosts` (`last_seen`);