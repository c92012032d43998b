// Package schema is the ent schema of the ORM smoke test: one entity, enough for a
// create/read/update/delete through the pgcache driver.
package schema

import (
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
)

// Item is a named thing with a quantity and an optional note.
type Item struct {
	ent.Schema
}

// Fields of the Item.
func (Item) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().Unique(),
		field.Int("qty").Default(0),
		field.String("note").Optional().Nillable(),
	}
}

// Edges of the Item: none.
func (Item) Edges() []ent.Edge {
	return nil
}
