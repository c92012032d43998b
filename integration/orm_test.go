package integration_test

import (
	"context"
	"database/sql"
	"testing"

	entsql "entgo.io/ent/dialect/sql"
	"github.com/jmoiron/sqlx"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/integration/internal/ent"
	entitem "github.com/pgcache/pgcache/integration/internal/ent/item"
)

// The ORM smoke tests run one scenario through each ORM over a *sql.DB of the
// driver under test, compared with the same ORM over pgx: the ORM creates its
// table, then creates, reads, updates and deletes rows, and runs into a unique
// violation.

// ormItem is a row as every ORM's scenario reports it.
type ormItem struct {
	ID   int64
	Name string
	Qty  int
	Note *string
}

// ormScenario is one ORM's implementation of the scenario's steps.
type ormScenario struct {
	migrate   func(ctx context.Context) error
	create    func(ctx context.Context, name string, qty int, note *string) (id int64, err error)
	readQtyGE func(ctx context.Context, min int) ([]ormItem, error)
	setQty    func(ctx context.Context, name string, qty int) (rowsAffected int64, err error)
	delete    func(ctx context.Context, name string) (rowsAffected int64, err error)
}

// run runs the scenario through s and traces every step.
func (s ormScenario) run(ctx context.Context) trace {
	var tr trace
	tr.add("migrate", nil, s.migrate(ctx))
	note := "n"
	for _, it := range []ormItem{{Name: "a", Qty: 1}, {Name: "b", Qty: 2}, {Name: "c", Qty: 3, Note: &note}} {
		id, err := s.create(ctx, it.Name, it.Qty, it.Note)
		tr.add("create "+it.Name, id, err)
	}
	items, err := s.readQtyGE(ctx, 2)
	tr.add("read", items, err)
	n, err := s.setQty(ctx, "b", 20)
	tr.add("update", n, err)
	n, err = s.delete(ctx, "a")
	tr.add("delete", n, err)
	_, err = s.create(ctx, "c", 4, nil)
	tr.add("create duplicate", nil, err)
	items, err = s.readQtyGE(ctx, 0)
	tr.add("read after", items, err)
	return tr
}

// testORM compares the scenario through pgx and pgcache and checks its outcome.
func testORM(t *testing.T, table string, scenario func(*sql.DB) ormScenario) {
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{
		setup: []string{`DROP TABLE IF EXISTS ` + table},
		work: func(ctx context.Context, db *sql.DB) (trace, error) {
			return scenario(db).run(ctx), nil
		},
	})
	tr.wantOK(t, "migrate", "create a", "create b", "create c", "read", "update", "delete", "read after")
	note := "n"
	for _, want := range []step{
		{Name: "create c", Value: int64(3)},
		{Name: "read", Value: []ormItem{{2, "b", 2, nil}, {3, "c", 3, &note}}},
		{Name: "update", Value: int64(1)},
		{Name: "delete", Value: int64(1)},
		{Name: "read after", Value: []ormItem{{2, "b", 20, nil}, {3, "c", 3, &note}}},
	} {
		if diff := outcomeDiff(want.Value, nil, tr.get(t, want.Name).Value, nil); diff != "" {
			t.Errorf("%s (-want +got):\n%s", want.Name, diff)
		}
	}
	if s := tr.get(t, "create duplicate"); s.Err == nil || s.Err.PgError == nil || s.Err.PgError.Code != "23505" {
		t.Errorf("create duplicate: %+v, want a unique violation", s.Err)
	}
}

// gormWidget is the GORM model.
type gormWidget struct {
	ID   int64  `gorm:"primaryKey"`
	Name string `gorm:"not null;uniqueIndex"`
	Qty  int    `gorm:"not null"`
	Note *string
}

func TestORMGorm(t *testing.T) {
	t.Parallel()
	testORM(t, "gorm_widgets", func(db *sql.DB) ormScenario {
		gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: db}), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			t.Fatal(err)
		}
		g := func(ctx context.Context) *gorm.DB { return gdb.WithContext(ctx).Table("gorm_widgets") }
		return ormScenario{
			migrate: func(ctx context.Context) error { return g(ctx).AutoMigrate(&gormWidget{}) },
			create: func(ctx context.Context, name string, qty int, note *string) (int64, error) {
				w := gormWidget{Name: name, Qty: qty, Note: note}
				err := g(ctx).Create(&w).Error
				return w.ID, err
			},
			readQtyGE: func(ctx context.Context, min int) ([]ormItem, error) {
				var ws []gormWidget
				err := g(ctx).Where("qty >= ?", min).Order("id").Find(&ws).Error
				items := make([]ormItem, len(ws))
				for i, w := range ws {
					items[i] = ormItem(w)
				}
				return items, err
			},
			setQty: func(ctx context.Context, name string, qty int) (int64, error) {
				res := g(ctx).Where("name = ?", name).Update("qty", qty)
				return res.RowsAffected, res.Error
			},
			delete: func(ctx context.Context, name string) (int64, error) {
				res := g(ctx).Where("name = ?", name).Delete(&gormWidget{})
				return res.RowsAffected, res.Error
			},
		}
	})
}

func TestORMSqlx(t *testing.T) {
	t.Parallel()
	testORM(t, "sqlx_widgets", func(db *sql.DB) ormScenario {
		x := sqlx.NewDb(db, "pgx")
		rowsAffected := func(res sql.Result, err error) (int64, error) {
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		}
		return ormScenario{
			migrate: func(ctx context.Context) error {
				_, err := x.ExecContext(ctx, `CREATE TABLE sqlx_widgets (
					id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, qty int NOT NULL, note text)`)
				return err
			},
			create: func(ctx context.Context, name string, qty int, note *string) (int64, error) {
				var id int64
				stmt, err := x.PrepareNamedContext(ctx, `INSERT INTO sqlx_widgets (name, qty, note) VALUES (:name, :qty, :note) RETURNING id`)
				if err != nil {
					return 0, err
				}
				defer stmt.Close()
				err = stmt.GetContext(ctx, &id, ormItem{Name: name, Qty: qty, Note: note})
				return id, err
			},
			readQtyGE: func(ctx context.Context, min int) ([]ormItem, error) {
				var items []ormItem
				err := x.SelectContext(ctx, &items, x.Rebind(`SELECT id, name, qty, note FROM sqlx_widgets WHERE qty >= ? ORDER BY id`), min)
				return items, err
			},
			setQty: func(ctx context.Context, name string, qty int) (int64, error) {
				query, args, err := sqlx.In(`UPDATE sqlx_widgets SET qty = ? WHERE name IN (?)`, qty, []string{name})
				if err != nil {
					return 0, err
				}
				return rowsAffected(x.ExecContext(ctx, x.Rebind(query), args...))
			},
			delete: func(ctx context.Context, name string) (int64, error) {
				return rowsAffected(x.NamedExecContext(ctx, `DELETE FROM sqlx_widgets WHERE name = :name`, map[string]any{"name": name}))
			},
		}
	})
}

// bunWidget is the bun model.
type bunWidget struct {
	bun.BaseModel `bun:"table:bun_widgets"`
	ID            int64   `bun:",pk,autoincrement"`
	Name          string  `bun:",notnull,unique"`
	Qty           int     `bun:",notnull"`
	Note          *string `bun:",nullzero"`
}

func TestORMBun(t *testing.T) {
	t.Parallel()
	testORM(t, "bun_widgets", func(db *sql.DB) ormScenario {
		b := bun.NewDB(db, pgdialect.New())
		rowsAffected := func(res sql.Result, err error) (int64, error) {
			if err != nil {
				return 0, err
			}
			return res.RowsAffected()
		}
		return ormScenario{
			migrate: func(ctx context.Context) error {
				_, err := b.NewCreateTable().Model((*bunWidget)(nil)).Exec(ctx)
				return err
			},
			create: func(ctx context.Context, name string, qty int, note *string) (int64, error) {
				w := bunWidget{Name: name, Qty: qty, Note: note}
				_, err := b.NewInsert().Model(&w).Exec(ctx)
				return w.ID, err
			},
			readQtyGE: func(ctx context.Context, min int) ([]ormItem, error) {
				var ws []bunWidget
				err := b.NewSelect().Model(&ws).Where("qty >= ?", min).Order("id").Scan(ctx)
				items := make([]ormItem, len(ws))
				for i, w := range ws {
					items[i] = ormItem{ID: w.ID, Name: w.Name, Qty: w.Qty, Note: w.Note}
				}
				return items, err
			},
			setQty: func(ctx context.Context, name string, qty int) (int64, error) {
				return rowsAffected(b.NewUpdate().Model((*bunWidget)(nil)).Set("qty = ?", qty).Where("name = ?", name).Exec(ctx))
			},
			delete: func(ctx context.Context, name string) (int64, error) {
				return rowsAffected(b.NewDelete().Model((*bunWidget)(nil)).Where("name = ?", name).Exec(ctx))
			},
		}
	})
}

func TestORMEnt(t *testing.T) {
	t.Parallel()
	testORM(t, "items", func(db *sql.DB) ormScenario {
		client := ent.NewClient(ent.Driver(entsql.OpenDB("postgres", db)))
		return ormScenario{
			migrate: func(ctx context.Context) error { return client.Schema.Create(ctx) },
			create: func(ctx context.Context, name string, qty int, note *string) (int64, error) {
				it, err := client.Item.Create().SetName(name).SetQty(qty).SetNillableNote(note).Save(ctx)
				if err != nil {
					return 0, err
				}
				return int64(it.ID), nil
			},
			readQtyGE: func(ctx context.Context, min int) ([]ormItem, error) {
				its, err := client.Item.Query().Where(entitem.QtyGTE(min)).Order(ent.Asc(entitem.FieldID)).All(ctx)
				items := make([]ormItem, len(its))
				for i, it := range its {
					items[i] = ormItem{ID: int64(it.ID), Name: it.Name, Qty: it.Qty, Note: it.Note}
				}
				return items, err
			},
			setQty: func(ctx context.Context, name string, qty int) (int64, error) {
				n, err := client.Item.Update().Where(entitem.Name(name)).SetQty(qty).Save(ctx)
				return int64(n), err
			},
			delete: func(ctx context.Context, name string) (int64, error) {
				n, err := client.Item.Delete().Where(entitem.Name(name)).Exec(ctx)
				return int64(n), err
			},
		}
	})
}
